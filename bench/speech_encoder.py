"""Whisper tiny.en speech tower: utterance-length vs 30-s padded encoding, batched vs one by one.

    python bench/speech_encoder.py            # 48 FSDD digits + 5 LibriVox sentences -> bench/results/speech_encoder.json
    python bench/speech_encoder.py --quick    # 8 digits + 2 sentences, ~30 s -> bench/results/speech_encoder_quick.json

Real clips: FSDD spoken digits (~0.3-0.8 s, 8 kHz resampled to 16 kHz) and the
LibriVox sentences of Debian `pocketsphinx-testdata` (3-7 s). Audio is decoded
before timing, so a number is log-mel + encoder. The four modes of a set are
timed round-robin (`timeit_interleaved`) so drifting load hits them alike, and
their ratios come from the same run. The 30-s path runs on the first few clips
only (it is slow). On a busy 2-core machine torch's 2 OpenMP threads can be 10x
slower than 1 thread: pass `--threads 1` there (recorded in the result).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import timeit_interleaved, write_result  # noqa: E402
from xmodal_core.audio import Audio, load_audio  # noqa: E402
from xmodal_core.encoders.whisper import WhisperEncoder  # noqa: E402
from xmodal_core.paths import SHARED_DATA  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
SPEAKERS = ("george", "jackson", "lucas", "nicolas")


def fsdd_clips(n: int) -> list[Path]:
    """n recordings spread over digits, speakers and takes (deterministic)."""
    folder = SHARED_DATA / "fsdd" / "recordings"
    paths = [folder / f"{i % 10}_{SPEAKERS[i % 4]}_{(i * 7) % 50}.wav" for i in range(n)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"error: FSDD recordings missing, e.g. {missing[0]}")
    return paths


def librivox_clips(n: int) -> list[Path]:
    paths = sorted(LIBRIVOX.glob("*.wav"))[:n]
    if not paths:
        sys.exit("error: no LibriVox sentences: install the Debian package pocketsphinx-testdata")
    return paths


def bench_set(enc: WhisperEncoder, clips: list[Audio], n_padded: int, batch_size: int,
              repeat: int, warmup: int) -> dict:
    """The four modes on one set; ms per item, ratios, and how close the paths' embeddings are."""
    few = clips[:n_padded]
    sync = torch.cuda.synchronize if enc.device.type == "cuda" else (lambda: None)

    def run(fn):
        return lambda: (fn(), sync())

    fns = {
        "utterance_batched": run(lambda: enc.encode(clips, batch_size=batch_size)),
        "utterance_one_by_one": run(lambda: [enc.encode([c]) for c in clips]),
        "padded30_batched": run(lambda: enc.encode_padded30(few, batch_size=batch_size)),
        "padded30_one_by_one": run(lambda: [enc.encode_padded30([c]) for c in few]),
    }
    n_items = {"utterance_batched": len(clips), "utterance_one_by_one": len(clips),
               "padded30_batched": len(few), "padded30_one_by_one": len(few)}
    stats = timeit_interleaved(fns, repeat=repeat, warmup=warmup)
    modes = {
        name: {"ms_per_item": round(s["min_ms"] / n_items[name], 2),
               "ms_per_item_median": round(s["p50_ms"] / n_items[name], 2),
               "n_items": n_items[name], "repeat": s["n"]}
        for name, s in stats.items()
    }
    ms = {k: v["ms_per_item"] for k, v in modes.items()}

    utt = enc.encode(clips, batch_size=batch_size)
    single = np.concatenate([enc.encode([c]) for c in clips])
    pad = enc.encode_padded30(few, batch_size=batch_size)
    same_clip = (utt[:n_padded] * pad).sum(1)
    return {
        "n_clips": len(clips),
        "seconds_per_clip_mean": round(float(np.mean([c.duration for c in clips])), 3),
        "modes": modes,
        "ratios": {
            "padded30_over_utterance_one_by_one": round(ms["padded30_one_by_one"] / ms["utterance_one_by_one"], 2),
            "padded30_over_utterance_batched": round(ms["padded30_batched"] / ms["utterance_batched"], 2),
            "utterance_one_by_one_over_batched": round(ms["utterance_one_by_one"] / ms["utterance_batched"], 2),
            "padded30_one_by_one_over_batched": round(ms["padded30_one_by_one"] / ms["padded30_batched"], 2),
        },
        "same_clip_cosine_utterance_vs_padded30": {
            "min": round(float(same_clip.min()), 4), "mean": round(float(same_clip.mean()), 4)},
        "max_abs_diff_batched_vs_one_by_one": float(np.abs(utt - single).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 digits + 2 sentences, 1 timed round")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds per mode (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is far steadier on a busy machine")
    parser.add_argument("--name", default=None, help="result name (default speech_encoder[_quick])")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeat = args.repeat or (1 if args.quick else 3)
    n_fsdd, n_fsdd_padded, n_libri = (8, 4, 2) if args.quick else (48, 12, 5)

    load_before = os.getloadavg()
    enc = WhisperEncoder(device=args.device)
    enc.module()
    sets = {
        "fsdd_digits": ([load_audio(p) for p in fsdd_clips(n_fsdd)], n_fsdd_padded),
        "librivox_sentences": ([load_audio(p) for p in librivox_clips(n_libri)], n_libri),
    }
    results = {name: bench_set(enc, clips, n_padded, args.batch_size, repeat, warmup=1)
               for name, (clips, n_padded) in sets.items()}
    payload = {
        "model": enc.name,
        "weights_id": enc.weights_id,
        "quick": args.quick,
        "settings": {"device": str(enc.device), "batch_size": args.batch_size, "repeat": repeat,
                     "torch_threads": torch.get_num_threads(),
                     "load_average_before": [round(x, 2) for x in load_before],
                     "load_average_after": [round(x, 2) for x in os.getloadavg()],
                     "timing": "ms per item = fastest round / items (median round also given); "
                               "modes of a set interleaved round-robin"},
        "results": results,
    }
    path = write_result(args.name or ("speech_encoder_quick" if args.quick else "speech_encoder"), payload)

    print(f"{'set':<20}{'mode':<24}{'ms/item':>10}{'median':>10}{'n':>5}")
    for set_name, r in results.items():
        for mode, m in r["modes"].items():
            print(f"{set_name:<20}{mode:<24}{m['ms_per_item']:>10.1f}{m['ms_per_item_median']:>10.1f}{m['n_items']:>5}")
        for k, v in r["ratios"].items():
            print(f"{'':<20}{k:<40}{v:>6.2f}x")
        cos = r["same_clip_cosine_utterance_vs_padded30"]
        print(f"{'':<20}same-clip cosine utterance vs padded30: min {cos['min']}, mean {cos['mean']}")
    print(f"{os.cpu_count()} cpus, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"device {enc.device}, load avg before {load_before[0]:.1f}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
