"""Alignment training on synthetic paired features: configs, the loop, resume, DDP equivalence."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.align import PairSplit, evaluate, gallery, train
from trainers.common import DistInfo, OfflineContext, leave_distributed
from xmodal_core.errors import InputError
from xmodal_core.metrics import recall_at_k
from xmodal_core.models.aligned import AlignConfig, build_model, load_aligned
from xmodal_core.models.config import parse_overrides


def synthetic_pairs(n: int, seed: int, dims=(48, 32), latent: int = 12, noise: float = 0.3,
                    towers=("speech", "text")) -> PairSplit:
    """Two views of a shared latent code through fixed random maps (the same maps for every
    split: seed 0), plus noise; record i of one tower pairs with record i of the other."""
    maps = torch.Generator().manual_seed(0)
    proj = [torch.randn(latent, d, generator=maps) for d in dims]
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent, generator=gen)
    feats = {m: F.normalize(z @ p + noise * torch.randn(n, d, generator=gen), dim=-1)
             for m, p, d in zip(towers, proj, dims)}
    ids = [f"s{seed}-{i}" for i in range(n)]
    return PairSplit(ids=ids, groups=ids, labels=[None] * n, keys={m: ids for m in towers}, features=feats)


def tiny_config(**overrides) -> AlignConfig:
    base = dict(dataset="synthetic", towers=("speech", "text"), locked="both", no_head=("text",), head="linear",
                loss="cwcl", batch_size=32, lr=3e-3, epochs=4, warmup_steps=2, device="cpu", dropout=0.0)
    base.update(overrides)
    return AlignConfig(**base)


# ------------------------------------------------------------------ config

def test_config_round_trips_through_json_and_overrides():
    cfg = tiny_config(loss="multitask", loss_weights={"cwcl": 1.0, "l2": 0.5}, betas=(0.9, 0.98))
    again = AlignConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.towers == ("speech", "text") and again.betas == (0.9, 0.98)
    data = cfg.to_dict() | parse_overrides(["lr=1e-4", "towers=[\"image\", \"text\"]", "locked=text", "seed=3"])
    changed = AlignConfig.from_dict(data)
    assert (changed.lr, changed.towers, changed.locked, changed.seed) == (1e-4, ("image", "text"), "text", 3)
    assert changed.anchor == "text" and changed.other == "image"


@pytest.mark.parametrize("overrides, message", [
    (dict(towers=("speech", "speech")), "two different modalities"),
    (dict(locked="image"), "locked must be"),
    (dict(locked="speech"), "must be locked"),  # text has no head but would be fine-tuned
    (dict(loss="triplet"), "loss must be"),
    (dict(loss="multitask"), "needs loss_weights"),
    (dict(no_head=("speech", "text")), "nothing to train"),
    (dict(head="transformer"), "head must be"),
    (dict(best_metric="image2text_r@1"), "not a validation metric"),
    (dict(class_prior={"text": 0.3}), "class_prior names 'text'"),
    (dict(class_prior={"speech": 1.5}), "must be in \\[0, 1\\)"),
])
def test_config_rejects_what_cannot_run(overrides, message):
    with pytest.raises(InputError, match=message):
        tiny_config(**overrides)


def test_unknown_and_mistyped_settings_are_named():
    with pytest.raises(InputError, match="unknown AlignConfig setting.*learning_rate"):
        AlignConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(InputError, match="batch_size must be a whole number"):
        AlignConfig.from_dict({"batch_size": "big"})


def test_lr_scales_linearly_with_batch():
    assert tiny_config(lr=1e-3, batch_size=256, lr_base_batch=64).scaled_lr(1e-3) == pytest.approx(4e-3)
    assert tiny_config(lr=1e-3, batch_size=256).scaled_lr(1e-3) == 1e-3


# ------------------------------------------------------------------ evaluation pieces

def test_gallery_dedupes_views_and_marks_group_positives():
    keys = ["seven", "seven", "two", "seven", "two"]
    groups = ["g7", "g7", "g2", "g7b", "g2"]
    rows, positives = gallery(keys, groups)
    assert rows == [0, 2]  # one gallery entry per distinct text
    assert positives.tolist() == [[True, False], [True, False], [False, True], [True, False], [False, True]]


# ------------------------------------------------------------------ training

@pytest.mark.parametrize("loss, extra", [("cl", {}), ("cwcl", {}), ("l2", {}),
                                         ("multitask", {"loss_weights": {"cwcl": 1.0, "l2": 1.0}})])
def test_training_aligns_synthetic_pairs(tmp_path, loss, extra):
    cfg = tiny_config(loss=loss, head="mlp", dropout=0.1, **extra)
    train_split, val_split = synthetic_pairs(256, seed=1), synthetic_pairs(64, seed=2)
    untrained = evaluate(build_model(cfg, {"speech": 48, "text": 32}), val_split, cfg)
    ctx = OfflineContext(tmp_path / loss)
    result = train(cfg, train_split, val_split, ctx, info=DistInfo())

    assert result.steps == 4 * (256 // 32) and not result.stopped
    losses = [m["loss"] for _, _, m in ctx.history if "loss" in m]
    assert len(losses) == result.steps and all(math.isfinite(x) for x in losses)
    assert sum(losses[-8:]) < sum(losses[:8])  # the loss goes down
    assert result.best["r_mean"] > untrained["r_mean"] + 0.2  # 64-way retrieval: chance is ~0.1 at R@5
    assert result.best["text2speech_r@10"] > 0.8
    if loss != "l2":  # L2 to a teacher retrieves student -> teacher worse (as the paper reports)
        assert result.best["speech2text_r@10"] > 0.8
    assert (tmp_path / loss / "heads.safetensors").is_file() and (tmp_path / loss / "last.pt").is_file()


def test_saved_run_reloads_with_the_same_embeddings(tmp_path):
    cfg = tiny_config(head="mlp", dropout=0.1, epochs=2)
    train_split, val_split = synthetic_pairs(128, seed=1), synthetic_pairs(32, seed=2)
    result = train(cfg, train_split, val_split, OfflineContext(tmp_path), info=DistInfo())
    aligned = load_aligned(tmp_path)
    assert aligned.dim == 32 and aligned.modalities == ("speech", "text")
    emb = {m: aligned.model.embed(m, val_split.features[m]) for m in ("speech", "text")}
    # The text tower is head-less: its shared-space embedding is its own feature.
    assert torch.allclose(emb["text"], val_split.features["text"], atol=1e-6)
    sim = emb["speech"] @ emb["text"].T
    r1 = recall_at_k(sim, torch.arange(32), ks=(1,))["R@1"]
    assert r1 == pytest.approx(result.best["speech2text_r@1"])
    with pytest.raises(InputError, match="cannot embed image"):
        aligned.embed_image(["x.png"])


class StopAfter(OfflineContext):
    """Asks the loop to stop once `n` steps are logged (a cancel request)."""

    def __init__(self, run_dir, n: int):
        super().__init__(run_dir)
        self.n = n

    def should_stop(self) -> bool:
        return sum("loss" in m for _, _, m in self.history) >= self.n


def test_stopped_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    cfg = tiny_config(head="mlp", dropout=0.1, epochs=3)  # dropout: the RNG state must be restored too
    train_split, val_split = synthetic_pairs(128, seed=1), synthetic_pairs(32, seed=2)
    straight = train(cfg, train_split, val_split, OfflineContext(tmp_path / "straight"), info=DistInfo())

    first = train(cfg, train_split, val_split, StopAfter(tmp_path / "resumed", 5), info=DistInfo())
    assert first.stopped and first.steps == 5  # stopped mid-epoch (4 steps per epoch)
    resumed_ctx = OfflineContext(tmp_path / "resumed")
    second = train(cfg, train_split, val_split, resumed_ctx, info=DistInfo())
    assert second.steps == straight.steps == 12 and not second.stopped
    assert [s for s, _, m in resumed_ctx.history if "loss" in m] == list(range(6, 13))

    a = torch.load(tmp_path / "straight" / "last.pt")["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert second.best == straight.best


class CountingContext(OfflineContext):
    """Counts checkpoint writes."""

    def __init__(self, run_dir):
        super().__init__(run_dir)
        self.saved = 0

    def save_checkpoint(self, state) -> None:
        self.saved += 1
        super().save_checkpoint(state)


def test_validation_every_k_epochs_and_checkpoints_at_most_every_interval(tmp_path, monkeypatch):
    import trainers.loop as loop

    cfg = tiny_config(epochs=7, eval_every=3)
    train_split, val_split = synthetic_pairs(64, seed=1), synthetic_pairs(32, seed=2)
    ctx = CountingContext(tmp_path / "sparse")
    result = train(cfg, train_split, val_split, ctx, info=DistInfo())
    validated = [epoch for _, epoch, m in ctx.history if any(k.startswith("val/") for k in m)]
    assert validated == [3, 6, 7]                      # every 3rd epoch, and always the last
    assert result.best_epoch in validated
    assert ctx.saved == 1 and torch.load(tmp_path / "sparse" / "last.pt")["step"] == result.steps  # short epochs

    monkeypatch.setattr(loop, "CHECKPOINT_EVERY_S", 0.0)  # every epoch is due: one checkpoint each
    ctx = CountingContext(tmp_path / "dense")
    train(tiny_config(epochs=3), train_split, val_split, ctx, info=DistInfo())
    assert ctx.saved == 3


# ------------------------------------------------------------------ distributed

def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, run_dir: str, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        cfg = AlignConfig.from_dict(cfg_dict)
        ctx = OfflineContext(run_dir, writable=rank == 0)
        train(cfg, synthetic_pairs(128, seed=1), None, ctx, info=DistInfo(rank, world, torch.device("cpu")))
        if rank == 0:
            torch.save({"losses": [m["loss"] for _, _, m in ctx.history if "loss" in m]}, out)
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_distributed(0)  # as `xmodal train` under torchrun ends a rank (a plain exit can abort in gloo teardown)


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    import socket

    import torch.multiprocessing as mp

    # Every loss term at once; linear heads, no dropout: the two runs see the same numbers.
    cfg = tiny_config(loss="multitask", loss_weights={"cl": 1.0, "cwcl": 1.0, "l2": 0.5}, epochs=2, batch_size=32)
    single = OfflineContext(tmp_path / "single")
    torch.set_num_threads(1)
    train(cfg, synthetic_pairs(128, seed=1), None, single, info=DistInfo())
    single_losses = [m["loss"] for _, _, m in single.history if "loss" in m]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, cfg.to_dict(), str(tmp_path / "ddp"), str(out)), nprocs=2, join=True)

    ddp_losses = torch.load(out)["losses"]
    assert len(ddp_losses) == len(single_losses) == 8
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5, abs=1e-6)
    a = torch.load(tmp_path / "single" / "last.pt")["model"]
    b = torch.load(tmp_path / "ddp" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
