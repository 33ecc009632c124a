"""The library's models: the run-kind registry, and one training loop that records the same
things for every kind (weights and config artifacts, checkpoints that resume)."""
from __future__ import annotations

import pytest
import torch

from tests.test_trainers_align import synthetic_pairs, tiny_config
from tests.test_trainers_vgs import synthetic_vgs, tiny_vgs
from trainers.common import DistInfo, OfflineContext
from xmodal_core.errors import InputError
from xmodal_core.models import kinds


class RecordingContext(OfflineContext):
    """An OfflineContext that keeps the artifacts it is told about."""

    def __init__(self, run_dir):
        super().__init__(run_dir)
        self.artifacts: list[tuple[str, str]] = []

    def add_artifact(self, kind, path) -> None:
        self.artifacts.append((kind, str(path)))


def test_every_kind_has_a_config_class_a_loader_and_a_train_function():
    import trainers.align
    import trainers.vgs

    assert set(kinds.KINDS) == {"align", "vgs"}
    for name, kind in kinds.KINDS.items():
        cls = kind.config_class()
        cfg = cls()
        assert cls.from_dict(cfg.to_dict()) == cfg
        assert kind.trainer_available()
        assert kinds.train_function(name) is {"align": trainers.align, "vgs": trainers.vgs}[name].train_run
        assert callable(kinds.import_target(kind.loader))
    assert kinds.train_function("trainers.align:train_run") is trainers.align.train_run


@pytest.mark.parametrize("kind, message", [("nope", "unknown run kind 'nope'"),
                                           ("trainers.align:no_such", "cannot import trainers.align:no_such")])
def test_unknown_kinds_are_refused_by_name(kind, message):
    with pytest.raises(InputError, match=message):
        kinds.train_function(kind)


def test_config_class_names_the_known_kinds():
    with pytest.raises(InputError, match="use one of align, vgs"):
        kinds.config_class("clip")


@pytest.mark.parametrize("kind", ["align", "vgs"])
def test_both_trainers_record_their_final_weights_without_validation_and_load_them_by_kind(tmp_path, kind):
    from safetensors.torch import load_file

    if kind == "align":
        from trainers.align import train
        cfg, data, weights = tiny_config(epochs=2), synthetic_pairs(64, seed=1), "heads.safetensors"
    else:
        from trainers.vgs import train
        cfg, data, weights = tiny_vgs(epochs=2), synthetic_vgs(16, seed=1), "model.safetensors"
    ctx = RecordingContext(tmp_path / kind)
    result = train(cfg, data, None, ctx, info=DistInfo())
    assert not result.stopped and result.best_epoch == 2 and result.best == {}
    names = [k for k, _ in ctx.artifacts]
    assert names == [{"align": "heads", "vgs": "model"}[kind]] * 2 + ["config"]
    assert ctx.artifacts[0][1] == str(tmp_path / kind / weights)
    saved = load_file(str(tmp_path / kind / weights))
    last = torch.load(tmp_path / kind / "last.pt")["model"]  # the final epoch's weights
    assert all(torch.equal(saved[k], last[k].float()) for k in saved)

    loaded = kinds.load_run(tmp_path / kind)  # the loader the registry names for this kind
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], last[k]) for k in last)
