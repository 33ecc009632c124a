"""Untrained baselines for the default model's targets, with the same packaged towers.

- `fsdd_cascade`: Whisper tiny.en transcribes each FSDD clip, the transcript is mapped to the
  nearest digit word (a digit or number word in it, else MiniLM cosine).
- `fsdd_asif`: FSDD clips and the 10 digit words compared through ASIF relative representations
  over paired synthetic-speech anchors (Whisper features of the speech, MiniLM of its text).
- `tuxpaint_asif`, `tuxpaint_ridge`: Tux Paint caption -> image retrieval over the held-out fifth,
  through ASIF over the image training pairs, or a ridge map from EfficientNet features to MiniLM
  (its regularisation chosen on the dev tenth of the training groups).

Real speech is only evaluated on. `python -m trainers.baselines [--json]` measures them all.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch

from trainers.default_model import build_sources, heldout_tuxpaint, load_config, speaker_top1, tuxpaint_gallery
from xmodal_core.errors import DatasetError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Spoken forms Whisper writes for digits: numerals and a few homophones.
_WORDS = {**{str(i): w for i, w in enumerate(DIGITS)}, "oh": "zero", "o": "zero", "to": "two", "too": "two",
          "for": "four", "won": "one", "ate": "eight", "nein": "nine"}


def _fsdd(limit: int | None = None) -> list:
    from xmodal_core.data import load_manifest

    records = [r for r in load_manifest("fsdd") if r.audio]
    if limit is not None:  # a fixed, evenly spread subset
        step = max(1, len(records) // limit)
        records = records[::step][:limit]
    if not records:
        raise DatasetError("no FSDD recordings: `xmodal data build fsdd`")
    return records


def _accuracy(records: Sequence, predicted: Sequence[str]) -> dict[str, Any]:
    from xmodal_core.evaluate import classification

    result = classification(predicted, [r.label for r in records], DIGITS, groups=[r.speaker or "" for r in records])
    return {"top1": result.top1, "n": result.n, **speaker_top1(result)}


def transcript_to_digit(transcript: str, digit_emb: np.ndarray | None = None) -> str:
    """The digit word a transcript says: the first digit or digit word in it, else the nearest
    digit word by MiniLM cosine (an empty transcript gives "zero", a guess)."""
    tokens = re.findall(r"[a-z0-9]+", transcript.lower())
    for token in tokens:
        if token in DIGITS:
            return token
        if token in _WORDS:
            return _WORDS[token]
        if token.isdigit():
            return DIGITS[int(token[0])]
    if not tokens:
        return DIGITS[0]
    from xmodal_core.registry import get_encoder

    minilm = get_encoder("minilm")
    digit_emb = digit_emb if digit_emb is not None else minilm.encode(list(DIGITS))
    return DIGITS[int(np.argmax(minilm.encode([transcript]) @ digit_emb.T))]


def fsdd_cascade(limit: int | None = None, latency_n: int = 20) -> dict[str, Any]:
    """Whisper tiny.en ASR then the nearest digit word, on FSDD (all 2,000 clips unless `limit`).

    `ms_per_query` is the median of `latency_n` clips transcribed one at a time from their files.
    """
    from xmodal_core import spaces
    from xmodal_core.registry import get_encoder, get_transcriber

    records = _fsdd(limit)
    transcripts = spaces.transcribe([r.audio for r in records])  # cached on disk after the first time
    digit_emb = get_encoder("minilm").encode(list(DIGITS))
    predicted = [transcript_to_digit(t, digit_emb) for t in transcripts]
    out = _accuracy(records, predicted)
    asr = get_transcriber()
    times = []
    for r in records[:: max(1, len(records) // latency_n)][:latency_n]:
        t0 = time.perf_counter()
        transcript_to_digit(asr.transcribe([r.audio])[0], digit_emb)
        times.append((time.perf_counter() - t0) * 1000)
    out["ms_per_query"] = float(np.median(times))
    out["examples"] = [[r.label, t] for r, t in list(zip(records, transcripts))[:: max(1, len(records) // 8)][:8]]
    return out


def speech_anchors(n: int = 450, seed: int = 0) -> list:
    """`n` synthetic utterances from the default model's speech set (train split, seeded): the
    paired anchors for ASIF (digit and number words, captions and emoji names)."""
    from xmodal_core.data import load_manifest

    cfg = load_config()
    try:
        records = [r for r in load_manifest(cfg.speech.dataset, split="train") if r.audio and r.text]
    except DatasetError:
        raise DatasetError(f"the synthetic speech set {cfg.speech.dataset} is not built: run `xmodal default-model` "
                           "(or `python -m trainers.default_model`) first") from None
    rng = np.random.default_rng(seed)
    return [records[i] for i in sorted(rng.choice(len(records), size=min(n, len(records)), replace=False))]


def fsdd_asif(n_anchors: int = 450, encoder: str = "whisper-tiny.en", k: int = 90, p: float = 8.0,
              limit: int | None = None, latency_n: int = 20) -> dict[str, Any]:
    """ASIF zero-shot on FSDD: clips and digit words as relative representations over `n_anchors`
    synthetic speech/text pairs; no training."""
    from xmodal_core.data import FeatureCache
    from xmodal_core.registry import get_encoder
    from xmodal_core.retrieval import asif_similarity, relative_representation

    records, anchors = _fsdd(limit), speech_anchors(n_anchors)
    cache = FeatureCache(encoder)
    speech_anchor = torch.as_tensor(cache.get(anchors, "speech"))
    text_anchor = torch.as_tensor(FeatureCache("minilm").get(anchors, "text"))
    queries = torch.as_tensor(cache.get(records, "speech"))
    classes = torch.as_tensor(get_encoder("minilm").encode(list(DIGITS)))
    sim = asif_similarity(queries, speech_anchor, classes, text_anchor, k=min(k, len(anchors)), p=p)
    out = _accuracy(records, [DIGITS[i] for i in sim.argmax(1).tolist()])
    out["anchors"] = len(anchors)
    class_rel = relative_representation(classes, text_anchor, min(k, len(anchors)), p)
    speech_encoder = get_encoder(encoder)
    times = []
    for r in records[:: max(1, len(records) // latency_n)][:latency_n]:
        t0 = time.perf_counter()
        q = torch.as_tensor(speech_encoder.encode([r.audio]))
        int((relative_representation(q, speech_anchor, min(k, len(anchors)), p) @ class_rel.T).argmax())
        times.append((time.perf_counter() - t0) * 1000)
    out["ms_per_query"] = float(np.median(times))
    return out


def _image_pairs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(EfficientNet, MiniLM) features of the default image training set's pairs of one split."""
    from xmodal_core.data import FeatureCache, load_manifest

    cfg = load_config()
    try:
        records = [r for r in load_manifest(cfg.image.dataset, split=split) if r.image and r.text]
    except DatasetError:
        raise DatasetError(f"{cfg.image.dataset} is not built: run `xmodal default-model` first") from None
    return (torch.as_tensor(FeatureCache(cfg.image.encoders["image"]).get(records, "image")),
            torch.as_tensor(FeatureCache("minilm").get(records, "text")))


def _heldout_features() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from xmodal_core.data import FeatureCache

    images, captions, positives = tuxpaint_gallery(heldout_tuxpaint())
    return (torch.as_tensor(FeatureCache("efficientnet-lite0").get(images, "image")),
            torch.as_tensor(FeatureCache("minilm").get(captions, "text")), positives)


def _recalls(sim: torch.Tensor, positives: torch.Tensor) -> dict[str, float]:
    from xmodal_core.evaluate import recall

    return recall(sim, positives, (1, 5, 10)).metrics()


def tuxpaint_asif(k: int = 90, p: float = 8.0) -> dict[str, Any]:
    """Caption -> image over the held-out fifth through ASIF, anchors = the image training pairs."""
    from xmodal_core.retrieval import asif_similarity

    anchor_img, anchor_txt = _image_pairs("train")
    gallery, queries, positives = _heldout_features()
    sim = asif_similarity(queries, anchor_txt, gallery, anchor_img, k=min(k, len(anchor_img)), p=p)
    return {**_recalls(sim, positives), "anchors": len(anchor_img), "queries": len(queries), "gallery": len(gallery)}


def ridge_map(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares W, mean: (x - mean) @ W ~ y, with an L2 penalty `lam` on W."""
    x64, y64 = x.double(), y.double()
    mean = x64.mean(0)
    xc = x64 - mean
    w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ y64)
    return w.float(), mean.float()


def tuxpaint_ridge(lams: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0)) -> dict[str, Any]:
    """Caption -> image over the held-out fifth through a ridge map image -> MiniLM, fitted on the
    image training pairs; the penalty is the best by dev-tenth caption -> image R@1 + R@10."""
    import torch.nn.functional as F

    from xmodal_core.data import load_manifest

    x, y = _image_pairs("train")
    cfg = load_config()
    dev = [r for r in load_manifest(cfg.image.dataset, split="val") if r.image]
    dev_img, dev_cap, dev_pos = tuxpaint_gallery(dev)
    from xmodal_core.data import FeatureCache

    dx = torch.as_tensor(FeatureCache("efficientnet-lite0").get(dev_img, "image"))
    dq = torch.as_tensor(FeatureCache("minilm").get(dev_cap, "text"))
    scores = {}
    for lam in lams:
        w, mean = ridge_map(x, y, lam)
        r = _recalls(dq @ F.normalize((dx - mean) @ w, dim=-1).T, dev_pos)
        scores[lam] = r["r@1"] + r["r@10"]
    lam = max(scores, key=scores.get)
    w, mean = ridge_map(x, y, lam)
    gallery, queries, positives = _heldout_features()
    sim = queries @ F.normalize((gallery - mean) @ w, dim=-1).T
    return {**_recalls(sim, positives), "lambda": lam, "pairs": len(x), "queries": len(queries), "gallery": len(gallery)}


def run_all(cascade_limit: int | None = None) -> dict[str, Any]:
    """Every baseline; the synthetic speech and image sets must exist (the default model builds them)."""
    build_sources()
    out = {"fsdd_asif": fsdd_asif(), "fsdd_asif_tail": fsdd_asif(encoder="whisper-tiny.en-tail"),
           "tuxpaint_asif": tuxpaint_asif(), "tuxpaint_ridge": tuxpaint_ridge(),
           "fsdd_cascade": fsdd_cascade(limit=cascade_limit)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cascade-limit", type=int, help="transcribe only this many FSDD clips (default all 2,000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run_all(args.cascade_limit)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "examples"}
            print(f"{name}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
