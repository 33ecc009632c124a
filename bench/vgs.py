"""FaST-VGS against its targets: coarse-to-fine vs coarse vs fine, on people's recordings and on
held-out synthetic voices, over the default gallery; K_c sweep, scale, and the lambda table.

    python -m bench.vgs                    # the shipped FaST-VGS -> bench/results/vgs.json (~5 min)
    python -m bench.vgs --only lambdas     # the paper's lambda settings, each trained (~35 min), merged in

Query sets (every mode gets the same queries and the same gallery, in one run):
- people: the 65 Tux Paint `*_desc.ogg` recordings (never trained on, never used to choose a
  setting) -> the stamp's picture among the default gallery's 2,410 items; a hit is a picture of
  the recording's own stamp group (as in bench/adapt.py);
- synthetic: the clips of the gallery's names by voices held out of training (one per name) -> any
  picture whose caption says what the clip says (`adapt.pairs`).
Scores come from one pass per query (coarse over every item, fine over every item), so coarse,
fine and CTF at every K_c rank the same scores; latency is measured separately through
`xmodal_core.search.search` (the product path: decode, one Whisper pass, head, index, rerank).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write_result  # noqa: E402

K_SWEEP = (10, 25, 50, 100)
KS = (1, 5, 10)
LAMBDAS = {"coarse only": (1.0, 0.0), "fine only": (0.0, 1.0), "(1, 1)": (1.0, 1.0), "(1, 0.1)": (1.0, 0.1),
           "(0.1, 1)": (0.1, 1.0)}
TARGETS = {"ctf_r@1_gain_over_coarse": 0.05, "ctf_r@10_vs_fine": 0.99, "ctf_vs_coarse_p50": 2.0}


def p50(ms: Sequence[float]) -> float:
    return round(float(statistics.median(ms)), 2)


# -- scores of every query against every item, from the model's own functions

class Scorer:
    """A shared-space FaST-VGS over one gallery: per query, coarse and fine scores of every item."""

    def __init__(self, run_id: int, gallery, state):
        from xmodal_core.search.vgs import shared_gallery
        from xmodal_core.spaces import current_space, load_run_model, load_vgs_model

        self.retriever = load_vgs_model(run_id)
        self.model = self.retriever.model
        self.space = current_space()
        self.sg = shared_gallery(gallery, run_id, self.space, self.retriever)
        self.head = load_run_model(state.run_dir)
        self.row = {item_id: i for i, item_id in enumerate(self.sg.ids)}

    def frames(self, audios: Sequence[Any]):
        """Frames and adapted-head rows of recordings (one Whisper pass each)."""
        import torch

        from xmodal_core.encoders.whisper import mean_pool
        from xmodal_core.registry import get_encoder

        enc = get_encoder(self.retriever.config.encoders["speech"])
        out = []
        with torch.no_grad():
            for a in audios:
                tok, mask = enc.encode_tokens([a])
                pooled = mean_pool(tok, mask)
                out.append((tok, mask, self.head.model.embed("speech", pooled)))
        return out

    def scores(self, tok, mask, q, *, fine_rows: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(coarse over every item, fine over `fine_rows` (default: every item; others -inf))."""
        import torch

        m, sg = self.model, self.sg
        with torch.no_grad():
            s_c = m.speech_coarse(q)
            coarse = (s_c @ sg.coarse.T)[0].numpy()
            s_kv, s_mask = m.speech_memory(tok, mask)
            rows = list(range(len(sg.ids))) if fine_rows is None else list(fine_rows)
            fine = np.full(len(sg.ids), -np.inf, dtype=np.float32)
            for c in range(0, len(rows), 1024):
                part = torch.tensor(rows[c:c + 1024])
                fine[part.numpy()] = m.fine_scores(s_kv, s_mask, s_c, sg.tokens[part][None].float(), sg.mask[part][None],
                                                   sg.coarse[part][None])[0].numpy()
        return coarse, fine


def recall(rankings: Sequence[Sequence[int]], positives: Sequence[set], ks=KS) -> dict[str, float]:
    return {f"r@{k}": float(np.mean([bool(set(r[:k]) & p) for r, p in zip(rankings, positives)])) for k in ks}


def rank_all(coarse: np.ndarray, fine: np.ndarray, k_sweep=K_SWEEP, k: int = max(KS)) -> dict[str, list[int]]:
    """Rankings (item rows, best first) of coarse, fine, and CTF at each K_c."""
    out = {"coarse": list(np.argsort(-coarse, kind="stable")[:k])}
    if np.isfinite(fine).all():
        out["fine"] = list(np.argsort(-fine, kind="stable")[:k])
    order = np.argsort(-coarse, kind="stable")
    for kc in k_sweep:
        cand = order[:kc]
        out[f"ctf@{kc}"] = list(cand[np.argsort(-fine[cand], kind="stable")][:k])
    return out


def evaluate_queries(scorer: Scorer, audios, positives: Sequence[set], *, full_fine: bool = True) -> dict[str, Any]:
    """R@k of coarse, fine (when `full_fine`) and CTF at every K_c, on the same queries."""
    rankings: dict[str, list] = {}
    for (tok, mask, q) in scorer.frames(audios):
        coarse, _ = scorer.scores(tok, mask, q, fine_rows=[])
        rows = None if full_fine else list(np.argsort(-coarse, kind="stable")[:max(K_SWEEP)])
        coarse, fine = scorer.scores(tok, mask, q, fine_rows=rows)
        for name, r in rank_all(coarse, fine).items():
            rankings.setdefault(name, []).append(r)
    return {name: {**recall(r, positives), "n": len(r)} for name, r in rankings.items()}


# -- query sets

def people(gallery, scorer: Scorer) -> tuple[list, list[set]]:
    from bench.adapt import people_queries, positives_by_group

    queries = people_queries("tuxpaint")
    pos = positives_by_group(gallery, "tuxpaint", queries)
    return queries, [{scorer.row[i] for i in p if i in scorer.row} for p in pos]


def synthetic(gallery, scorer: Scorer, cfg, limit: int | None) -> tuple[list[str], list[set]]:
    """Held-out-voice clips of the gallery's names (every `n`-th, for `limit`), and their positives."""
    from xmodal_core.adapt.pairs import gallery_pairs

    pairs = gallery_pairs(gallery, voices=cfg.pair_voices)
    val = pairs.split("val")
    if limit and len(val) > limit:
        val = val[::int(np.ceil(len(val) / limit))]
    audios = [pairs.records[i].audio for i in val]
    return audios, [{scorer.row[pairs.item_ids[j]] for j in pairs.positives[i] if pairs.item_ids[j] in scorer.row}
                    for i in val]


# -- latency through the product path

def latency(gallery, queries, modes_kc: Sequence[tuple[str, int]], run_id: int,
            positives: Sequence[set] | None = None) -> dict[str, Any]:
    """p50 / p95 of `search()`'s own stage total per (mode, K_c), queries dithered (nothing cached);
    with `positives` (item ids per query) also each mode's R@k through the product path."""
    from xmodal_core.audio import load_audio
    from xmodal_core.search import Query, search
    from xmodal_core.spaces import current_space

    space = replace_vgs(current_space(), run_id)
    rng = np.random.default_rng()
    out = {}
    for mode, kc in modes_kc:
        def fresh(path):
            x = load_audio(path).samples
            return Query.from_input("speech", (16_000, x + rng.normal(0, 1e-6, len(x)).astype(np.float32)))

        search(gallery, fresh(queries[0].audio), mode, k=10, k_coarse=kc, space=space)  # warm
        ms, stages, ranked = [], {}, []
        for r in queries:
            res = search(gallery, fresh(r.audio), mode, k=10, k_coarse=kc, space=space)
            ms.append(res.total_ms)
            ranked.append([h.item.id for h in res.hits])
            for name, t in res.timings:
                stages.setdefault(name, []).append(t)
        key = mode if mode in ("coarse", "direct", "fine") else f"{mode}@{kc}"
        out[key] = {"p50_ms": p50(ms), "p95_ms": round(float(np.percentile(ms, 95)), 2), "n": len(ms),
                    "stages_p50_ms": {k: p50(v) for k, v in stages.items()}}
        if positives is not None:
            out[key].update(recall(ranked, positives))
    return out


def replace_vgs(space, run_id: int):
    from xmodal_core.spaces import Space

    return Space(speech_run=space.speech_run, image_run=space.image_run, vgs_run=run_id)


def scale_timing(scorer: Scorer, audio, sizes=(1000, 10_000), repeat: int = 15) -> dict[str, Any]:
    """Fine (every item) and CTF (K_c 100) per-query ms of the scoring stages at 1,000 and 10,000
    items; the larger gallery repeats the default gallery's items (tokens and rows) with a little noise,
    since no 10,000-picture captioned gallery is installed here. Speech frames are computed once."""
    import torch

    from xmodal_core.retrieval import VectorIndex

    m = scorer.model
    (tok, mask, q), = scorer.frames([audio])
    out = {}
    with torch.no_grad():
        s_c = m.speech_coarse(q)
        s_kv, s_mask = m.speech_memory(tok, mask)
        for n in sizes:
            reps = int(np.ceil(n / len(scorer.sg.ids)))
            gen = torch.Generator().manual_seed(n)
            tokens = scorer.sg.tokens.repeat(reps, 1, 1, 1)[:n]
            masks = scorer.sg.mask.repeat(reps, 1)[:n]
            coarse = scorer.sg.coarse.repeat(reps, 1)[:n]
            coarse = coarse + 1e-3 * torch.randn(coarse.shape, generator=gen)
            index = VectorIndex(coarse.shape[1])
            index.add([str(i) for i in range(n)], coarse.numpy())

            def fine(rows):
                res = []
                for c in range(0, len(rows), 1024):
                    part = torch.tensor(rows[c:c + 1024])
                    res.append(m.fine_scores(s_kv, s_mask, s_c, tokens[part][None].float(), masks[part][None],
                                             coarse[part][None])[0])
                return torch.cat(res)

            def time_of(fn):
                fn()
                ts = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    fn()
                    ts.append((time.perf_counter() - t) * 1000)
                return p50(ts)

            def ctf():
                _, ids = index.search(s_c.numpy(), 100)
                fine([int(i) for i in ids[0]])

            def coarse_only():
                index.search(s_c.numpy(), 10)

            out[str(n)] = {"coarse_ms": time_of(coarse_only), "ctf@100_ms": time_of(ctf),
                           "fine_ms": time_of(lambda: fine(list(range(n))))}
    return out


# -- the lambda table

def lambda_table(gallery, state, shipped_id: int, cfg, people_q, syn_limit: int) -> dict[str, Any]:
    """Each of the paper's (lambda_coarse, lambda_fine) settings trained with the recipe otherwise
    unchanged (the shipped run is (0.1, 1)); coarse and CTF (K_c 100) R@k on both query sets."""
    from xmodal_core.adapt.shipped_vgs import build

    out = {}
    for name, (lc, lf) in LAMBDAS.items():
        t = time.perf_counter()
        run_id = shipped_id if (lc, lf) == (cfg.lambda_coarse, cfg.lambda_fine) else build(
            replace(cfg, lambda_coarse=lc, lambda_fine=lf))
        scorer = Scorer(run_id, gallery, state)
        queries, pos = people(gallery, scorer)
        res_p = evaluate_queries(scorer, [r.audio for r in queries], pos, full_fine=False)
        audios, spos = synthetic(gallery, scorer, cfg, syn_limit)
        res_s = evaluate_queries(scorer, audios, spos, full_fine=False)
        out[name] = {"lambda_coarse": lc, "lambda_fine": lf, "run_id": run_id,
                     "seconds": round(time.perf_counter() - t, 1),
                     "people": {"coarse": res_p["coarse"], "ctf@100": res_p["ctf@100"]},
                     "synthetic": {"coarse": res_s["coarse"], "ctf@100": res_s["ctf@100"]}}
        print(f"lambda {name}: {json.dumps(out[name]['people'])}", file=sys.stderr, flush=True)
    return out


def verdict(results: dict[str, Any], kc: int) -> dict[str, bool]:
    met = {}
    for split in ("people", "synthetic"):
        r = results.get(split)
        if not r:
            continue
        ctf, coarse = r[f"ctf@{kc}"], r["coarse"]
        met[f"{split}: ctf_r@1>=coarse_r@1+0.05"] = ctf["r@1"] >= coarse["r@1"] + TARGETS["ctf_r@1_gain_over_coarse"]
        if "fine" in r:
            met[f"{split}: ctf_r@10>=0.99*fine_r@10"] = ctf["r@10"] >= TARGETS["ctf_r@10_vs_fine"] * r["fine"]["r@10"]
    lat = results.get("latency", {})
    if f"coarse-to-fine@{kc}" in lat and "coarse" in lat:
        met["ctf_p50<=2x_coarse_p50"] = (lat[f"coarse-to-fine@{kc}"]["p50_ms"]
                                         <= TARGETS["ctf_vs_coarse_p50"] * lat["coarse"]["p50_ms"])
    return met


SECTIONS = ("people", "synthetic", "latency", "scale", "lambdas")


def main(argv=None) -> int:
    from xmodal_core.adapt.shipped_vgs import install, load_recipe
    from xmodal_core.gallery import open_gallery
    from xmodal_core.search.direct import adapted_state

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections (default: all but lambdas)")
    p.add_argument("--run", type=int, help="a FaST-VGS run id instead of the shipped one")
    p.add_argument("--k-coarse", type=int, default=None, help="K_c for the targets (default: the search default)")
    p.add_argument("--synthetic-limit", type=int, default=600, help="held-out clips (every n-th of ~2,050)")
    p.add_argument("--out", default="vgs", help="result name under bench/results/")
    args = p.parse_args(argv)
    sections = args.only or [s for s in SECTIONS if s != "lambdas"]
    cfg = load_recipe()
    from xmodal_core.search import DEFAULT_K_COARSE

    kc = args.k_coarse or DEFAULT_K_COARSE
    run_id = args.run or install()
    gallery = open_gallery("default")
    state = adapted_state("default")
    scorer = Scorer(run_id, gallery, state)
    from bench._common import RESULTS_DIR

    old = RESULTS_DIR / f"{args.out}.json"
    kept = json.loads(old.read_text(encoding="utf-8")) if old.is_file() and args.only else {}
    if kept.get("run_id") != run_id:  # sections of another run are not mixed in
        kept = {}
    results: dict[str, Any] = {k: v for k, v in kept.items() if k not in ("name", "date", "machine")}
    results.update({"run_id": run_id, "k_coarse": kc, "gallery_items": len(scorer.sg.ids),
                    "adapted_run": state.run_id})
    queries, pos = people(gallery, scorer)
    for name in sections:
        t = time.perf_counter()
        if name == "people":
            results[name] = evaluate_queries(scorer, [r.audio for r in queries], pos)
        elif name == "synthetic":
            audios, spos = synthetic(gallery, scorer, cfg, args.synthetic_limit)
            results[name] = evaluate_queries(scorer, audios, spos)
        elif name == "latency":
            from bench.adapt import positives_by_group

            results[name] = latency(gallery, queries, [("coarse", kc), ("direct", kc), ("fine", kc)]
                                    + [("coarse-to-fine", k) for k in K_SWEEP], run_id,
                                    positives_by_group(gallery, "tuxpaint", queries))
        elif name == "scale":
            results[name] = scale_timing(scorer, queries[0].audio)
        elif name == "lambdas":
            results[name] = lambda_table(gallery, state, run_id, cfg, queries, args.synthetic_limit)
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 1)
        results.setdefault("measured_at", {})[name] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        print(f"{name}: done in {results['seconds'][name]:.0f} s", file=sys.stderr, flush=True)
        write_result(args.out, {**results, "targets": TARGETS, "met": verdict(results, kc)})  # kept if a later one fails
    results["targets"] = TARGETS
    results["met"] = verdict(results, kc)
    path = write_result(args.out, results)
    print(json.dumps(results["met"], indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
