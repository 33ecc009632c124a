"""Untrained baselines: the ASR cascade's digit mapping, ridge, ASIF over real Tux Paint and FSDD."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_default_model import in_small_home, small_home  # noqa: F401 - shared fixtures
from trainers import baselines


@pytest.mark.parametrize("transcript, digit", [
    ("Six.", "six"), ("7", "seven"), ("Number 3!", "three"), ("Eight", "eight"), ("oh", "zero"), ("for", "four"),
    ("", "zero"),
])
def test_transcripts_map_to_the_digit_they_say(transcript, digit):
    assert baselines.transcript_to_digit(transcript) == digit


def test_a_transcript_without_a_digit_goes_to_the_nearest_digit_word_by_minilm():
    from xmodal_core.registry import get_encoder

    minilm = get_encoder("minilm")
    words = list(baselines.DIGITS)
    expected = words[int(np.argmax(minilm.encode(["Thanks."]) @ minilm.encode(words).T))]
    assert baselines.transcript_to_digit("Thanks.") == expected


def test_ridge_map_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20)).astype(np.float32) + 3.0
    w_true = rng.normal(size=(20, 5)).astype(np.float32)
    y = (x - x.mean(0)) @ w_true
    w, mean = baselines.ridge_map(torch.from_numpy(x), torch.from_numpy(y), lam=1e-6)
    assert np.allclose(mean.numpy(), x.mean(0), atol=1e-4)
    assert np.allclose(w.numpy(), w_true, atol=1e-3)
    w_big, _ = baselines.ridge_map(torch.from_numpy(x), torch.from_numpy(y), lam=1e6)
    assert float(w_big.norm()) < 0.1 * float(w.norm())  # the penalty shrinks the map


@pytest.mark.slow
def test_cascade_on_real_fsdd_clips(in_small_home):  # noqa: F811
    from xmodal_core.data import load_manifest
    from xmodal_core.registry import get_transcriber

    out = baselines.fsdd_cascade(limit=10, latency_n=2)
    assert out["n"] == 10 and out["ms_per_query"] > 0
    assert all(isinstance(t, str) for _, t in out["examples"])
    # independently: the same 10 evenly spread clips, transcribed here, mapped to digits, counted by hand
    records = [r for r in load_manifest("fsdd") if r.audio]
    records = records[:: max(1, len(records) // 10)][:10]
    asr = get_transcriber()
    said = [baselines.transcript_to_digit(asr.transcribe([r.audio])[0]) for r in records]
    hits = [s == r.label for s, r in zip(said, records)]
    assert out["top1"] == pytest.approx(sum(hits) / len(hits))
    for speaker in {r.speaker for r in records}:
        mine = [h for h, r in zip(hits, records) if r.speaker == speaker]
        assert out[f"top1_{speaker.split(':')[-1]}"] == pytest.approx(sum(mine) / len(mine))


@pytest.mark.slow
def test_asif_and_ridge_baselines_on_real_data(in_small_home):  # noqa: F811
    speech = baselines.fsdd_asif(n_anchors=100, limit=40, latency_n=2)
    assert speech["n"] == 40 and speech["anchors"] == 100
    assert speech["top1"] >= 0.2, speech  # 10 digits: chance is 0.1
    asif = baselines.tuxpaint_asif()
    ridge = baselines.tuxpaint_ridge()
    for r in (asif, ridge):
        assert 0.0 <= r["r@1"] <= r["r@5"] <= r["r@10"] <= 1.0 and r["queries"] > 0
    assert ridge["lambda"] in (0.1, 0.3, 1.0, 3.0, 10.0)
