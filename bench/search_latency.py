"""Speech -> image query latency and accuracy, end to end from decoded audio to ranked ids.

    python -m bench.search_latency            # 1k and 10k real images, 100k and 1M synthetic -> search_latency.json
    python -m bench.search_latency --quick    # 200 images, 20 queries, 20k synthetic -> search_latency_quick.json

Queries: the Tux Paint spoken descriptions recorded by people (split test; the images they
describe are test images, never trained on). Galleries are real images: the described images
plus other Tux Paint stamps, then emoji and Fashion-MNIST images to reach 10k. A query's hit
is its own stamp. The timer starts from an `Audio` already decoded in memory and stops when the
ranked ids are out; each mode runs on each query in turn (round-robin, so load drift hits all).

Modes:
- cascade: Whisper tiny.en ASR (greedy, 30-s padded as Whisper was trained) -> MiniLM -> the
  nearest captions -> their images (no training).
- coarse (shared space): Whisper pooled -> speech head into the locked MiniLM space -> flat
  index of the gallery's image-head embeddings (the app's `coarse` mode, with the app's default
  model in the full run; `bench.training.shared_space_runs`).
- FaST-VGS coarse / coarse-to-fine / fine: Whisper frames -> the VGS speech branch -> flat
  index (coarse); its top K_c = 100 reranked by the cross-attention scorer (CTF); or every
  gallery image scored by it (fine; on the first `--fine-queries` queries at large galleries).

On the first gallery, CTF is also timed for K_c = 10, 25, 50, 100 (the rerank cost grows with K_c).
The index part at 100k and 1M vectors uses synthetic cross-modal vectors (`bench.index.
cross_modal_data`, d = the VGS width): measured index latency plus the measured per-query
encode and rerank times; fine at those sizes is extrapolated from its measured cost per pair.
Anchors (FaST-VGS, Places): coarse 6.1 ms, fine 83.3 ms, CTF 12.2 ms per query.
Targets: CTF <= 1.5x coarse; CTF R@10 >= 0.99x fine's; coarse >= 5x faster than the cascade at
equal or better R@10.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench._common import timeit, write_result  # noqa: E402
from bench.training import ensure_dataset, ensure_standard_run, log, shared_space_runs  # noqa: E402

K = 10
K_COARSE = 100
FAST_VGS_PLACES_MS = {"coarse": 6.1, "fine": 83.3, "coarse-to-fine": 12.2}
MODES = ("cascade", "coarse-shared", "vgs-coarse", "vgs-ctf", "vgs-fine")


# ============================================================================ data

def human_queries(limit: int | None = None) -> list[tuple[Any, Any]]:
    """(speech record, image record) for each Tux Paint description spoken by a person (split test)."""
    from xmodal_core.data.manifest import load_manifest

    records = load_manifest(ensure_dataset("tuxpaint"))
    image_of = {r.group: r for r in records if r.image}
    pairs = [(r, image_of[r.group]) for r in records if r.audio and r.split == "test" and r.group in image_of]
    pairs.sort(key=lambda p: p[0].id)
    return pairs[:limit] if limit else pairs


def gallery_records(size: int, targets: list) -> tuple[list, dict[str, int]]:
    """`size` image records: the query targets first, then Tux Paint, emoji, Fashion-MNIST in
    manifest order (unique image files). Returns (records, count per source set)."""
    from xmodal_core.data.manifest import load_manifest

    out, seen = [], set()
    counts: dict[str, int] = {}

    def add(r, source: str) -> None:
        if len(out) < size and r.image and r.image not in seen:
            seen.add(r.image)
            out.append(r)
            counts[source] = counts.get(source, 0) + 1

    for r in targets:
        add(r, "tuxpaint")
    for name in ("tuxpaint", "emoji", "fashion-mnist"):
        if len(out) >= size:
            break
        for r in load_manifest(ensure_dataset(name)):
            add(r, name)
    return out, counts


# ============================================================================ the pipelines

class Pipelines:
    """The five query paths over one gallery; each `run_*` takes a decoded `Audio` and returns
    ranked item ids (best first), recording its stage times (ms) in `self.stages`."""

    def __init__(self, records: list, vgs_run: dict, speech_run: dict | None = None, image_run: dict | None = None,
                 device: str = "cpu"):
        """Prepare the gallery side as an app would, once: caption index (cascade), image-head
        index (coarse-shared; needs both aligned runs), VGS coarse index and projected image
        tokens for the fine scorer (EfficientNet tokens from the feature cache)."""
        from xmodal_core.models.aligned import load_aligned
        from xmodal_core.models.vgs import load_vgs
        from xmodal_core.data.features import FeatureCache
        from xmodal_core.registry import get_encoder, get_transcriber
        from xmodal_core.retrieval import VectorIndex

        self.device = torch.device(device)
        self.ids = [r.id for r in records]
        self.whisper = get_encoder("whisper-tiny.en", device=device)
        self.vgs = load_vgs(vgs_run["run_dir"], device=device).model
        shared = speech_run is not None and image_run is not None
        self.stages: dict[str, list[float]] = {}

        t0 = time.perf_counter()
        if shared:
            self.minilm = get_encoder("minilm", device=device)
            self.transcriber = get_transcriber("whisper-tiny.en", device=device)
            self.speech_model = load_aligned(speech_run["run_dir"], device=device)
            image_model = load_aligned(image_run["run_dir"], device=device)
            captions = FeatureCache("minilm").get(records, "text")
            self.caption_index = VectorIndex(captions.shape[1])
            self.caption_index.add(self.ids, captions)
        cache = FeatureCache("efficientnet-lite0")
        tok_parts, mask_parts, vgs_emb, shared_emb = [], [], [], []
        with torch.no_grad():
            for c0 in range(0, len(records), 500):
                tokens, mask = cache.get_tokens(records[c0:c0 + 500], "image")
                if shared:  # pooled = the mean of the 7x7 grid, as the encoder pools it
                    pooled = F.normalize((tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
                    shared_emb.append(image_model.model.embed("image", pooled.to(self.device)).float().cpu())
                i_tok, i_mask, i_emb = self.vgs.image(tokens.to(self.device), mask.to(self.device))
                tok_parts.append(i_tok)
                mask_parts.append(i_mask)
                vgs_emb.append(i_emb.float().cpu())
        self.image_tokens, self.image_mask = torch.cat(tok_parts), torch.cat(mask_parts)
        if shared:
            self.shared_index = VectorIndex(image_model.dim)
            self.shared_index.add(self.ids, torch.cat(shared_emb).numpy())
        self.vgs_index = VectorIndex(self.vgs.cfg.d_model)
        self.vgs_index.add(self.ids, torch.cat(vgs_emb).numpy())
        self.row_of = {i: n for n, i in enumerate(self.ids)}
        self.gallery_seconds = time.perf_counter() - t0

    def functions(self) -> dict[str, Callable]:
        """mode -> run function, for the modes this gallery was prepared for."""
        fns = {"cascade": self.run_cascade, "coarse-shared": self.run_coarse_shared} if hasattr(self, "shared_index") \
            else {}
        return {**fns, "vgs-coarse": self.run_vgs_coarse, "vgs-ctf": self.run_vgs_ctf, "vgs-fine": self.run_vgs_fine}

    def _stage(self, name: str, t0: float) -> float:
        t = time.perf_counter()
        self.stages.setdefault(name, []).append((t - t0) * 1000.0)
        return t

    def run_cascade(self, audio) -> list[str]:
        t = time.perf_counter()
        text = self.transcriber.transcribe([audio])[0] or " "
        t = self._stage("cascade: ASR", t)
        q = self.minilm.encode([text])
        t = self._stage("cascade: MiniLM", t)
        _, ids = self.caption_index.search(q, K)
        self._stage("cascade: caption search", t)
        return list(ids[0])

    def run_coarse_shared(self, audio) -> list[str]:
        t = time.perf_counter()
        q = self.speech_model.embed_speech([audio])
        t = self._stage("coarse-shared: Whisper + head", t)
        _, ids = self.shared_index.search(q, K)
        self._stage("coarse-shared: index search", t)
        return list(ids[0])

    @torch.no_grad()
    def _vgs_speech(self, audio, mode: str):
        t = time.perf_counter()
        tokens, mask = self.whisper.encode_tokens([audio])
        out = self.vgs.speech(tokens.to(self.device), mask.to(self.device))
        self._stage(f"{mode}: Whisper frames + VGS speech", t)
        return out

    def run_vgs_coarse(self, audio) -> list[str]:
        _, _, emb = self._vgs_speech(audio, "vgs-coarse")
        t = time.perf_counter()
        _, ids = self.vgs_index.search(emb.float().cpu().numpy(), K)
        self._stage("vgs-coarse: index search", t)
        return list(ids[0])

    @torch.no_grad()
    def _fine_scores(self, s_tok, s_mask, rows: torch.Tensor) -> torch.Tensor:
        n = len(rows)
        return self.vgs.fine_pairs(s_tok.expand(n, -1, -1), s_mask.expand(n, -1), self.image_tokens[rows],
                                   self.image_mask[rows])

    def run_vgs_ctf(self, audio) -> list[str]:
        from xmodal_core.retrieval import coarse_to_fine

        s_tok, s_mask, emb = self._vgs_speech(audio, "vgs-ctf")
        t = time.perf_counter()

        def scorer(_query, cand: list[str]) -> torch.Tensor:
            rows = torch.tensor([self.row_of[c] for c in cand])
            return self._fine_scores(s_tok, s_mask, rows)

        result = coarse_to_fine(None, self.vgs_index, scorer, k_coarse=K_COARSE, k=K,
                                query_vector=emb[0].float().cpu().numpy())
        self._stage(f"vgs-ctf: coarse top-{K_COARSE} + fine rerank", t)
        return list(result.ids)

    def ctf_sweep(self, audios: list, truth: list[set[str]], k_coarse: Sequence[int]) -> dict[str, Any]:
        """CTF latency and R@k as K_c (candidates reranked) varies: encode each query once, then
        time coarse search + rerank per K_c; reported latency = encode p50 + that p50."""
        from xmodal_core.retrieval import coarse_to_fine

        ranked: dict[int, list[list[str]]] = {kc: [] for kc in k_coarse}
        times: dict[int, list[float]] = {kc: [] for kc in k_coarse}
        encode = []
        with torch.no_grad():
            for audio in audios:
                t0 = time.perf_counter()
                tokens, mask = self.whisper.encode_tokens([audio])
                s_tok, s_mask, emb = self.vgs.speech(tokens.to(self.device), mask.to(self.device))
                encode.append((time.perf_counter() - t0) * 1000.0)
                vec = emb[0].float().cpu().numpy()

                def scorer(_query, cand: list[str]) -> torch.Tensor:
                    return self._fine_scores(s_tok, s_mask, torch.tensor([self.row_of[c] for c in cand]))

                for kc in k_coarse:
                    t0 = time.perf_counter()
                    result = coarse_to_fine(None, self.vgs_index, scorer, k_coarse=kc, k=K, query_vector=vec)
                    times[kc].append((time.perf_counter() - t0) * 1000.0)
                    ranked[kc].append(list(result.ids))
        enc = statistics.median(encode)
        return {str(kc): {"p50_ms": round(enc + statistics.median(times[kc]), 2),
                          "search_rerank_p50_ms": round(statistics.median(times[kc]), 2),
                          **recall_of(ranked[kc], truth)}
                for kc in k_coarse}

    def run_vgs_fine(self, audio, chunk: int = 1000) -> list[str]:
        s_tok, s_mask, _ = self._vgs_speech(audio, "vgs-fine")
        t = time.perf_counter()
        n = len(self.ids)
        scores = torch.cat([self._fine_scores(s_tok, s_mask, torch.arange(c0, min(n, c0 + chunk)))
                            for c0 in range(0, n, chunk)])
        top = scores.topk(min(K, n)).indices.tolist()
        self._stage(f"vgs-fine: fine scorer x {n}", t)
        return [self.ids[i] for i in top]


def latency_stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"n": len(s), "p50_ms": round(statistics.median(s), 2), "mean_ms": round(statistics.fmean(s), 2),
            "p95_ms": round(s[min(len(s) - 1, max(0, round(0.95 * len(s)) - 1))], 2), "min_ms": round(s[0], 2)}


def recall_of(ranked: list[list[str]], truth: list[set[str]]) -> dict[str, float]:
    return {f"R@{k}": round(float(np.mean([bool(set(r[:k]) & t) for r, t in zip(ranked, truth)])), 4)
            for k in (1, 5, 10)}


def run_queries(pipes: Pipelines, audios: list, n_fine: int) -> tuple[dict[str, list], dict[str, list[float]]]:
    """Every mode on every query, round-robin (fine on the first `n_fine`), after a 2-query
    warm-up. Returns (mode -> ranked ids per query, mode -> ms per query)."""
    fns = pipes.functions()
    for a in audios[:2]:  # warm-up: lazy init, allocator
        for fn in fns.values():
            fn(a)
    pipes.stages.clear()
    ranked: dict[str, list[list[str]]] = {m: [] for m in fns}
    times: dict[str, list[float]] = {m: [] for m in fns}
    with torch.no_grad():
        for qi, a in enumerate(audios):
            for mode, fn in fns.items():
                if mode == "vgs-fine" and qi >= n_fine:
                    continue
                t0 = time.perf_counter()
                ids = fn(a)
                times[mode].append((time.perf_counter() - t0) * 1000.0)
                ranked[mode].append(ids)
    return ranked, times


def bench_gallery(size: int, queries: list, runs: dict, fine_queries: int, device: str,
                  sweep: bool = False) -> dict[str, Any]:
    from xmodal_core.audio import load_audio

    records, counts = gallery_records(size, [img for _, img in queries])
    log(f"gallery {len(records)} images {counts}: embedding (cached features) ...")
    pipes = Pipelines(records, runs["vgs"], runs["speech"], runs["image"], device=device)
    group_ids: dict[str, set[str]] = {}
    for r in records:
        group_ids.setdefault(r.group, set()).add(r.id)
    audios = [load_audio(s.audio) for s, _ in queries]
    truth = [group_ids.get(s.group, set()) for s, _ in queries]
    fns = pipes.functions()
    n_fine = min(len(audios), fine_queries)
    log(f"gallery {len(records)}: {len(audios)} queries x {len(fns)} modes (fine on {n_fine})")
    ranked, times = run_queries(pipes, audios, n_fine)
    modes = {}
    for mode in fns:
        modes[mode] = {"latency_ms": latency_stats(times[mode]), **recall_of(ranked[mode], truth[:len(ranked[mode])]),
                       "n_queries": len(ranked[mode]),
                       "stages_p50_ms": {k.split(": ", 1)[1]: round(statistics.median(v), 2)
                                         for k, v in pipes.stages.items() if k.startswith(mode + ":")}}
    p50 = {m: modes[m]["latency_ms"]["p50_ms"] for m in modes}
    ctf_sub = recall_of(ranked["vgs-ctf"][:n_fine], truth[:n_fine])
    fine_sub = recall_of(ranked["vgs-fine"], truth[:n_fine])
    enc = [v for k, v in pipes.stages.items() if k.endswith("Whisper frames + VGS speech")]
    rerank = pipes.stages.get(f"vgs-ctf: coarse top-{K_COARSE} + fine rerank", [])
    fine_all = pipes.stages.get(f"vgs-fine: fine scorer x {len(records)}", [])
    out = {
        "n_images": len(records), "composition": counts, "n_queries": len(audios),
        "data": "queries: tuxpaint split test, spoken descriptions by people; gallery: real images "
                f"({', '.join(f'{k} {v}' for k, v in counts.items())})",
        "gallery_prepare_seconds": round(pipes.gallery_seconds, 2),
        "modes": modes,
        "fine_subset": {"n_queries": n_fine, "vgs-ctf": ctf_sub, "vgs-fine": fine_sub},
        "per_query_parts_ms": {
            "vgs_speech_encode_p50": round(statistics.median([x for v in enc for x in v]), 2),
            "ctf_rerank_p50": round(statistics.median(rerank), 2) if rerank else None,
            "fine_per_pair": round(statistics.median(fine_all) / len(records), 5) if fine_all else None,
        },
        "ratios": {
            "ctf_over_coarse": round(p50["vgs-ctf"] / p50["vgs-coarse"], 2),
            "fine_over_ctf": round(p50["vgs-fine"] / p50["vgs-ctf"], 2),
            "cascade_over_vgs_coarse": round(p50["cascade"] / p50["vgs-coarse"], 2),
            "cascade_over_coarse_shared": round(p50["cascade"] / p50["coarse-shared"], 2),
            "ctf_R10_over_fine_R10": round(ctf_sub["R@10"] / fine_sub["R@10"], 3) if fine_sub["R@10"] else None,
        },
    }
    if sweep:
        out["ctf_k_coarse_sweep"] = pipes.ctf_sweep(audios, truth, (10, 25, 50, 100))
        log(f"  K_c sweep: {out['ctf_k_coarse_sweep']}")
    r = out["ratios"]
    out["targets"] = {
        "ctf_within_1.5x_coarse": r["ctf_over_coarse"] <= 1.5,
        "ctf_R10_at_least_0.99x_fine": (ctf_sub["R@10"] >= 0.99 * fine_sub["R@10"]),
        "vgs_coarse_5x_faster_than_cascade_at_equal_or_better_R10":
            r["cascade_over_vgs_coarse"] >= 5 and modes["vgs-coarse"]["R@10"] >= modes["cascade"]["R@10"],
        "shared_coarse_5x_faster_than_cascade_at_equal_or_better_R10":
            r["cascade_over_coarse_shared"] >= 5 and modes["coarse-shared"]["R@10"] >= modes["cascade"]["R@10"],
    }
    for mode, m in modes.items():
        log(f"  {mode:<14} p50 {m['latency_ms']['p50_ms']:>9.1f} ms  R@1 {m['R@1']:.3f} R@10 {m['R@10']:.3f} "
            f"(n={m['n_queries']})")
    log(f"  ratios {r}; targets {out['targets']}")
    del pipes
    gc.collect()
    return out


def bench_synthetic(n: int, dim: int, parts: dict[str, float], n_queries: int = 200) -> dict[str, Any]:
    """Index latency on synthetic cross-modal vectors, composed with measured per-query parts."""
    from bench.index import cross_modal_data, recall_at_k
    from xmodal_core.retrieval import VectorIndex

    log(f"synthetic {n} x {dim}: building flat and hnsw")
    items, queries = cross_modal_data(n, n_queries, dim)
    ids = [str(i) for i in range(n)]
    out: dict[str, Any] = {"n": n, "dim": dim, "n_queries": n_queries,
                           "data": "synthetic cross-modal vectors (bench.index.cross_modal_data), not real images"}
    truth = None
    for kind in ("flat", "hnsw"):
        index = VectorIndex(dim, kind)
        t0 = time.perf_counter()
        index.add(ids, items)
        build_s = time.perf_counter() - t0
        _, found = index.search(queries, K)
        if kind == "flat":
            truth = found
        nxt = iter(range(10**9))
        stats = timeit(lambda: index.search(queries[next(nxt) % n_queries], K), repeat=100, warmup=5)
        _, cand = index.search(queries[:1], K_COARSE)
        search_ms = stats["p50_ms"]
        coarse = parts["vgs_speech_encode_p50"] + search_ms
        out[kind] = {
            "build_s": round(build_s, 2), "search_p50_ms": round(search_ms, 3),
            "search_p95_ms": round(stats["p95_ms"], 3),
            "recall_at_10_vs_flat": round(recall_at_k(found, truth), 4),
            "settings": repr(index),
            "composed_ms": {
                "coarse": round(coarse, 2),
                "coarse-to-fine": round(coarse + (parts["ctf_rerank_p50"] or 0.0), 2),
            },
        }
        del index
        gc.collect()
    if parts.get("fine_per_pair"):
        out["fine_extrapolated_ms"] = round(parts["vgs_speech_encode_p50"] + parts["fine_per_pair"] * n, 1)
    log(f"synthetic {n}: flat {out['flat']['search_p50_ms']} ms, hnsw {out['hnsw']['search_p50_ms']} ms "
        f"(recall {out['hnsw']['recall_at_10_vs_flat']})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200-image gallery, 20 queries, 20k synthetic")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="real gallery sizes (default 1000 10000)")
    parser.add_argument("--synthetic", type=int, nargs="*", default=None,
                        help="synthetic index sizes (default 100000 1000000)")
    parser.add_argument("--queries", type=int, default=None, help="spoken queries (default all; quick 20)")
    parser.add_argument("--fine-queries", type=int, default=None,
                        help="queries for the exhaustive fine mode (default all at <= 2k images, else 10)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([200] if args.quick else [1000, 10000])
    synthetic = args.synthetic if args.synthetic is not None else ([20_000] if args.quick else [100_000, 1_000_000])
    load_before = os.getloadavg()

    runs = {"vgs": ensure_standard_run("vgs", args.quick), **shared_space_runs(args.quick)}
    queries = human_queries(args.queries or (20 if args.quick else None))
    galleries = []
    for size in sizes:
        fine_q = args.fine_queries or (len(queries) if size <= 2000 else 10)
        galleries.append(bench_gallery(size, queries, runs, fine_q, args.device, sweep=not galleries))
    parts = galleries[0]["per_query_parts_ms"]
    largest = galleries[-1]["per_query_parts_ms"]
    parts = {**parts, "fine_per_pair": largest["fine_per_pair"] or parts["fine_per_pair"]}
    d = int(runs["vgs"]["config"]["d_model"])
    synth = [bench_synthetic(n, d, parts) for n in synthetic]
    payload = {
        "quick": args.quick,
        "what": "speech -> image query latency, end to end from decoded audio to ranked ids, and R@k",
        "queries": {"set": "tuxpaint", "split": "test", "what": "spoken descriptions by people (real speech)",
                    "n": len(queries)},
        "k": K, "k_coarse": K_COARSE, "device": args.device, "torch_threads": torch.get_num_threads(),
        "models": {k: {"run": Path(v["run_dir"]).name, "config": v["config"], "train_pairs": v["train_pairs"],
                       "source": v.get("source", "bench standard run"),
                       "trained_on": f"{v['config']['dataset']} split train"} for k, v in runs.items()},
        "galleries": galleries,
        "synthetic": synth,
        "anchors_fast_vgs_places_ms": FAST_VGS_PLACES_MS,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    path = write_result("search_latency_quick" if args.quick else "search_latency", payload)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
