"""Fine-tunable towers reproduce their frozen encoders, train without touching them, and a run
that fine-tunes Whisper saves and reloads (real weights, real FSDD recordings)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmodal_core.models.towers import trainable_tower
from xmodal_core.registry import get_encoder

pytestmark = pytest.mark.slow


def _fsdd(fsdd_dir, n: int, speakers=("jackson",)) -> list:
    """Take 0 of digits 0, 1, 2, ... by each speaker in turn: every digit is covered early."""
    files = [fsdd_dir / f"{digit}_{speaker}_0.wav" for digit in range(10) for speaker in speakers]
    return files[:n]


@pytest.mark.parametrize("name", ["minilm", "whisper-tiny.en", "efficientnet-lite0"])
def test_trainable_copy_matches_the_encoder_and_leaves_it_alone(name, fsdd_dir, chelsea_png):
    encoder = get_encoder(name, device="cpu")
    items = {"text": ["a cat on a mat", "seven", "a red fire truck"],
             "speech": _fsdd(fsdd_dir, 3),
             "image": [chelsea_png]}[encoder.modality]
    before = encoder.encode(items)
    tower = trainable_tower(encoder).eval()
    with torch.no_grad():
        ours = F.normalize(tower(items), dim=-1).numpy()
    assert np.allclose(ours, before, atol=2e-4)

    tower.train()
    params = [p for p in tower.parameters() if p.requires_grad]
    assert params and all(p.requires_grad for p in params)
    optimizer = torch.optim.SGD(params, lr=1e-2)
    tower(items)[:, :8].sum().backward()  # (MiniLM ends in a Normalize layer: a norm-based loss has no gradient)
    optimizer.step()
    with torch.no_grad():
        moved = F.normalize(tower.eval()(items), dim=-1).numpy()
    assert not np.allclose(moved, before, atol=1e-4)  # the copy trained ...
    assert np.array_equal(encoder.encode(items), before)  # ... the shared encoder did not


def test_fine_tuning_whisper_trains_saves_and_reloads(xmodal_home, fsdd_dir):
    from trainers.align import load_split, train
    from xmodal_core.models.aligned import AlignConfig, load_aligned
    from trainers.common import DistInfo, OfflineContext
    from xmodal_core.data.manifest import Record, write_manifest
    from xmodal_core.paths import datasets_dir

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    records = []
    for split, speakers, n in (("train", ("jackson", "nicolas"), 20), ("val", ("george",), 8)):
        for f in _fsdd(fsdd_dir, n, speakers):
            word = words[int(f.stem.split("_")[0])]
            records.append(Record(id=f.stem, audio=str(f), text=word, label=word, group=f.stem,
                                  speaker=f.stem.split("_")[1], split=split))
    write_manifest(datasets_dir() / "fsdd-mini" / "manifest.jsonl", records)

    cfg = AlignConfig(dataset="fsdd-mini", towers=("speech", "text"), locked="text", no_head=("text",),
                      head="linear", loss="cwcl", batch_size=8, epochs=1, device="cpu", templates="general:5")
    train_split, val_split = load_split(cfg, "train"), load_split(cfg, "val")
    assert "speech" in train_split.items and "text" in train_split.features  # computed vs cached
    run_dir = xmodal_home / "runs" / "ft"
    result = train(cfg, train_split, val_split, OfflineContext(run_dir), info=DistInfo())
    assert result.steps == 2 and "zeroshot_top1" in result.best and result.best["speech2text_r@10"] == 1.0

    aligned = load_aligned(run_dir)
    assert "speech" in aligned.model.towers  # the fine-tuned Whisper encoder came back from safetensors
    emb = aligned.embed_speech(_fsdd(fsdd_dir, 2, ("george",)))
    assert emb.shape == (2, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    text = aligned.embed_text(["seven"])
    assert np.allclose(text, get_encoder("minilm").encode(["seven"]), atol=1e-5)
