"""Frozen-feature cache: extraction throughput per encoder, batched vs one by one, cache hit vs recompute.

    python bench/features.py                 # minilm, whisper-tiny.en, efficientnet-lite0 -> bench/results/features.json
    python bench/features.py --quick         # fewer items -> bench/results/features_quick.json
    python bench/features.py --encoders minilm --threads 1

Items are real: Tux Paint captions (text), FSDD spoken digits (speech, from
../shared/data/fsdd), Tux Paint stamp PNGs (images). Throughput counts everything a
trainer would pay for from a path: decoding, preprocessing, the forward pass.
"Cache hit" is a fresh `FeatureCache` (nothing in memory) reading the same records
from disk: key digests + shard index + load; "recompute" is `encoder.encode` on the
same items. Target: a hit at least 20x faster than recomputing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import write_result  # noqa: E402
from xmodal_core.data.features import FeatureCache, _DIGESTS  # noqa: E402
from xmodal_core.data.manifest import Record  # noqa: E402
from xmodal_core.paths import SHARED_DATA  # noqa: E402
from xmodal_core.registry import get_encoder  # noqa: E402

TUX = Path("/usr/share/tuxpaint/stamps")


def tux_stamps(n: int) -> list[tuple[Path, str]]:
    """(png, first line of its description) for n stamps spread over the categories."""
    pngs = sorted(p for p in TUX.rglob("*.png") if p.with_suffix(".txt").is_file())
    if not pngs:
        sys.exit("error: Tux Paint stamps missing: install Debian tuxpaint-stamps-default")
    step = max(1, len(pngs) // n)
    chosen = pngs[::step][:n]
    return [(p, p.with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0].strip()) for p in chosen]


def records_for(modality: str, n: int) -> list[Record]:
    if modality == "text":
        return [Record(id=f"t{i}", text=text, group=f"t{i}") for i, (_, text) in enumerate(tux_stamps(n))]
    if modality == "image":
        return [Record(id=f"i{i}", image=str(p), group=f"i{i}") for i, (p, _) in enumerate(tux_stamps(n))]
    folder = SHARED_DATA / "fsdd" / "recordings"
    files = sorted(folder.glob("*.wav"))[:: max(1, 2000 // n)][:n]
    if not files:
        sys.exit(f"error: FSDD recordings missing in {folder}")
    return [Record(id=f"s{i}", audio=str(p), group=f"s{i}") for i, p in enumerate(files)]


def sync(encoder) -> None:
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()


def bench_encoder(name: str, n: int, n_single: int, device: str | None, repeat: int) -> dict:
    t0 = time.perf_counter()
    encoder = get_encoder(name, device=device)
    load_s = time.perf_counter() - t0
    records = records_for(encoder.modality, n)
    items = [r.item(encoder.modality) for r in records]
    encoder.encode(items[:4])  # warm-up (allocations, lazy init)
    sync(encoder)

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            sync(encoder)
            times.append(time.perf_counter() - t)
        return min(times)

    batched_s = best(lambda: encoder.encode(items))
    # One by one vs batched on the same (first n_single) items: item sizes vary a lot (stamp PNGs).
    single_items = items[:n_single]
    single_s = best(lambda: [encoder.encode([it]) for it in single_items])
    subset_batched_s = best(lambda: encoder.encode(single_items))

    with tempfile.TemporaryDirectory(prefix="xmodal-bench-features-") as root:
        t = time.perf_counter()
        report = FeatureCache(encoder, root=root).extract(records)
        extract_s = time.perf_counter() - t
        hit_times, hit_cold_digest = [], None
        for i in range(repeat):
            if i == 0:
                _DIGESTS.memo.clear()  # first hit also re-hashes the files, as a new process would
            cache = FeatureCache(encoder, root=root)
            t = time.perf_counter()
            got = cache.get(records)
            elapsed = time.perf_counter() - t
            if i == 0:
                hit_cold_digest = elapsed
            else:
                hit_times.append(elapsed)
        recompute_s = batched_s
        reference = encoder.encode(items)
        max_diff = float(np.abs(got - reference).max())
        shard_bytes = sum(p.stat().st_size for p in Path(root).rglob("*.safetensors"))
    hit_s = min(hit_times) if hit_times else hit_cold_digest
    return {
        "encoder": name,
        "weights_id": encoder.weights_id,
        "modality": encoder.modality,
        "device": str(encoder.device),
        "load_seconds": round(load_s, 3),
        "items": n,
        "batched": {"seconds": round(batched_s, 4), "items_per_s": round(n / batched_s, 2),
                    "batch_size": encoder.batch_size},
        "one_by_one": {"items": n_single, "seconds": round(single_s, 4), "items_per_s": round(n_single / single_s, 2),
                       "batched_same_items_seconds": round(subset_batched_s, 4),
                       "batched_same_items_per_s": round(n_single / subset_batched_s, 2)},
        "batched_speedup": round(single_s / subset_batched_s, 2),
        "extract_with_writes": {"seconds": round(extract_s, 4), "items_per_s": round(report.computed / extract_s, 2)},
        "cache_hit": {"seconds": round(hit_s, 5), "items_per_s": round(n / hit_s, 1),
                      "first_hit_with_file_hashing_seconds": round(hit_cold_digest, 5)},
        "recompute_seconds": round(recompute_s, 4),
        "hit_vs_recompute_speedup": round(recompute_s / hit_s, 1),
        "hit_vs_recompute_speedup_first_hit": round(recompute_s / hit_cold_digest, 1),
        "meets_20x_target": recompute_s / hit_s >= 20,
        "max_abs_diff_cached_vs_direct": max_diff,
        "cache_bytes": shard_bytes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["minilm", "whisper-tiny.en", "efficientnet-lite0"])
    ap.add_argument("--quick", action="store_true", help="fewer items and repeats (~1 min on 2 CPU cores)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {"text": (64, 16), "speech": (24, 8), "image": (24, 8)} if args.quick else \
        {"text": (256, 32), "speech": (96, 16), "image": (96, 16)}
    repeat = 2 if args.quick else 3
    results = []
    for name in args.encoders:
        modality = {"minilm": "text", "whisper-tiny.en": "speech", "efficientnet-lite0": "image"}.get(name)
        if modality is None:
            modality = get_encoder(name, device=args.device).modality
        n, n_single = sizes[modality]
        r = bench_encoder(name, n, n_single, args.device, repeat)
        results.append(r)
        print(f"{name:<20} {r['modality']:<6} batched {r['batched']['items_per_s']:>8.1f} items/s | one-by-one "
              f"{r['one_by_one']['items_per_s']:>7.1f} items/s (batched x{r['batched_speedup']:.1f} on the same items) | "
              f"cache hit {r['cache_hit']['items_per_s']:>9.1f} "
              f"items/s = {r['hit_vs_recompute_speedup']:.0f}x recompute (first hit incl. hashing "
              f"{r['hit_vs_recompute_speedup_first_hit']:.0f}x)", flush=True)
    path = write_result("features_quick" if args.quick else "features", {
        "what": "feature extraction throughput per encoder (batched vs one by one) and cache hit vs recompute",
        "data": ("text: Tux Paint captions (all splits); speech: FSDD digits (split test: human speech, evaluation-only); "
                 "image: Tux Paint stamp PNGs (all splits); throughput only, no accuracy"),
        "torch_threads": torch.get_num_threads(),
        "results": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
