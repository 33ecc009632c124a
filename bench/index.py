"""VectorIndex build time, query latency and recall@10 for flat / ivf / hnsw, on cross-modal queries.

    python bench/index.py                 # 100k and 1M vectors, d = 384 -> bench/results/index.json
    python bench/index.py --sizes 100000  # one size
    python bench/index.py --quick         # 20k vectors, < 1 min -> bench/results/index_quick.json

Data (`cross_modal_data`): items are clustered vectors (varying in a 32-d subspace, as real
embeddings mostly do) plus a shared "image" offset; queries are noisy copies of random items
with a different "text" offset, both renormalised, so queries and items come from different
distributions (the modality gap) as text and image embeddings do. Recall@10 is against exact
brute force (torch) on the same queries. Target: single-query p50 <= 2 ms at 1M with
recall@10 >= 0.95. `--sweep` adds recall / latency for other nprobe / ef_search values.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import timeit, write_result  # noqa: E402
from xmodal_core.retrieval import VectorIndex  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def cross_modal_data(
    n_items: int,
    n_queries: int,
    dim: int = 384,
    *,
    intrinsic_dim: int = 32,
    n_clusters: int | None = None,
    spread: float = 1.0,
    query_noise: float = 0.7,
    ambient_noise: float = 0.1,
    gap: float = 0.8,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic cross-modal data: (items (n_items, dim), queries (n_queries, dim)) float32 unit rows.

    Like real embeddings, the vectors vary mostly within a low-dimensional subspace: a latent
    point is `center[c] + spread * u` (u a unit direction in `intrinsic_dim` dimensions,
    `n_clusters` centres, default n_items / 100), mapped into `dim` by a random orthonormal basis.
    Items add small ambient noise and a shared "image" offset; queries are noisy copies of random
    items (`query_noise` in the latent space) with a different "text" offset. Offsets have norm
    `gap` (the modality gap) before renormalisation.
    """
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(1, n_items // 100)
    r = min(intrinsic_dim, dim)
    basis = np.linalg.qr(rng.standard_normal((dim, r)))[0].T.astype(np.float32)  # (r, dim) orthonormal rows
    centers = _unit(rng.standard_normal((n_clusters, r), dtype=np.float32))
    o_item, o_query = gap * _unit(rng.standard_normal((2, dim), dtype=np.float32))

    def ambient(n: int) -> np.ndarray:
        return ambient_noise * _unit(rng.standard_normal((n, dim), dtype=np.float32))

    items = np.empty((n_items, dim), dtype=np.float32)
    latent = np.empty((n_items, r), dtype=np.float32)
    chunk = 100_000  # bounded temporaries at 1M
    for start in range(0, n_items, chunk):
        stop = min(n_items, start + chunk)
        labels = rng.integers(0, n_clusters, stop - start)
        latent[start:stop] = centers[labels] + spread * _unit(rng.standard_normal((stop - start, r), dtype=np.float32))
        items[start:stop] = _unit(latent[start:stop] @ basis + ambient(stop - start) + o_item)
    picks = rng.integers(0, n_items, n_queries)
    noisy = latent[picks] + query_noise * _unit(rng.standard_normal((n_queries, r), dtype=np.float32))
    queries = _unit(noisy @ basis + ambient(n_queries) + o_query)
    return items, queries


def exact_top_ids(items: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """(Q, k) object array of the exact top-k item ids ("0", "1", ...) by brute force in torch.

    The reference for recall: one matmul per chunk of queries (faster than faiss' flat search on
    the benchmark machine, and independent of VectorIndex).
    """
    x = torch.from_numpy(items)
    out = []
    for start in range(0, len(queries), 256):
        sim = torch.from_numpy(queries[start : start + 256]) @ x.T
        out.append(sim.topk(k, dim=1).indices.numpy())
    rows = np.concatenate(out) if out else np.empty((0, k), dtype=np.int64)
    return np.vectorize(str, otypes=[object])(rows)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_q ∩ truth_q| / k; both (Q, k) arrays of ids."""
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found.tolist(), truth.tolist())]))


def _sweep(index: VectorIndex, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Recall@10 and single-query p50 for other nprobe (ivf) / ef_search (hnsw) values."""
    rows = []
    if index.kind == "ivf":
        knob, default = "nprobe", index.nprobe
        values = sorted({max(1, index.nlist // f) for f in (64, 32, 16, 8, 4)})
    else:
        knob, default = "ef_search", index.ef_search
        values = [32, 64, 128, 256]
    for v in values:
        setattr(index, knob, v)
        _, found = index.search(queries, 10)
        one = iter(range(10**9))
        stats = timeit(lambda: index.search(queries[next(one) % len(queries)], 10), repeat=100, warmup=3)
        rows.append({knob: v, "recall_at_10": recall_at_k(found, truth), "single_p50_ms": stats["p50_ms"],
                     "single_p95_ms": stats["p95_ms"]})
        print(f"    {knob}={v}: recall@10 {rows[-1]['recall_at_10']:.4f}, single p50 {stats['p50_ms']:.3f} ms",
              flush=True)
    setattr(index, knob, default)
    return rows


def bench_size(n: int, dim: int, n_queries: int, kinds: list[str], single: int, batch: int,
               on_result=lambda out: None, sweep: bool = False) -> dict:
    """Build each kind over the same data and measure it; `on_result(out)` after each kind."""
    t0 = time.perf_counter()
    items, queries = cross_modal_data(n, n_queries, dim)
    ids = [str(i) for i in range(n)]
    out: dict = {"n": n, "dim": dim, "n_queries": n_queries, "data_s": time.perf_counter() - t0, "kinds": {}}
    truth = exact_top_ids(items, queries, 10)
    for kind in kinds:
        gc.collect()
        index = VectorIndex(dim, kind)
        t0 = time.perf_counter()
        index.add(ids, items)
        build_s = time.perf_counter() - t0
        _, found = index.search(queries, 10)
        one = iter(range(10**9))
        repeat = single if kind != "flat" or n <= 100_000 else max(20, single // 10)  # exact at 1M is slow
        single_stats = timeit(lambda: index.search(queries[next(one) % n_queries], 10), repeat=repeat, warmup=3)
        batch_q = queries[:batch]
        slow_batch = kind == "flat" and n > 100_000  # ~40 s a batch on 2 cores: once is enough
        batch_stats = timeit(lambda: index.search(batch_q, 10), repeat=1 if slow_batch else 5,
                             warmup=0 if slow_batch else 1)
        row = {
            "build_s": build_s,
            "single_query_ms": single_stats,
            "batched": {
                "batch": len(batch_q),
                "per_query_ms_p50": batch_stats["p50_ms"] / len(batch_q),
                "batch_ms": batch_stats,
            },
            "recall_at_10": recall_at_k(found, truth),
            "settings": repr(index),
        }
        if sweep and kind in ("ivf", "hnsw"):
            row["sweep"] = _sweep(index, queries, truth)
        out["kinds"][kind] = row
        on_result(out)
        print(
            f"n={n:>8} {kind:>5}: build {build_s:7.1f} s, single p50 {single_stats['p50_ms']:.3f} ms "
            f"p95 {single_stats['p95_ms']:.3f} ms, batched {row['batched']['per_query_ms_p50']:.4f} ms/query, "
            f"recall@10 {row['recall_at_10']:.4f}  [{index!r}]",
            flush=True,
        )
        del index
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k vectors, under a minute")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="index sizes (default 100000 1000000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000, help="cross-modal queries for recall (default 1000)")
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument("--sweep", action="store_true", help="also sweep nprobe / ef_search (recall vs latency)")
    parser.add_argument("--name", default=None, help="result file name (default index / index_quick)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([20_000] if args.quick else [100_000, 1_000_000])
    name = args.name or ("index_quick" if args.quick else "index")
    runs: list[dict] = []

    def save(partial: dict | None = None, complete: bool = False):
        # Written after every index, so a run cut short (1M on 2 cores is long) keeps what it measured.
        return write_result(name, {
            "params": {"sizes": sizes, "dim": args.dim, "queries": args.queries, "k": 10, "quick": args.quick,
                       "data": "cross_modal_data: clustered items (32-d latent) + item offset; "
                               "noisy queries + query offset",
                       "single": "one query per search call; batched: 256 queries per call"},
            "complete": complete,
            "runs": runs + ([partial] if partial else []),
            "target": {"single_query_p50_ms_max": 2.0, "recall_at_10_min": 0.95, "at_n": 1_000_000},
        })

    for n in sizes:
        runs.append(bench_size(n, args.dim, args.queries, args.kinds, single=100 if args.quick else 300,
                               batch=256, on_result=save, sweep=args.sweep))
    path = save(complete=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
