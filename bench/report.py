"""Write docs/RESULTS.md (tables and plots) from the benchmark JSON under bench/results/.

    python -m bench.report                       # full results where present, else the quick ones
    python -m bench.report --quick               # only the *_quick.json results
    python -m bench.report --results DIR --out FILE.md

Every table names its data split, the machine and the date it was measured on, and every
target of issue 7 is marked met or not met. Plots are PNG files beside the report (in
`results/` next to it) when matplotlib is installed (`matplotlib==3.11.2`); without it the
report says so and keeps the tables.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run_all import BENCHES, RESULTS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "RESULTS.md"


# ============================================================================ formatting

def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.1f}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{max(1, digits - 1)}f}".rstrip("0").rstrip(".")
    return str(x)


def ms(x: Any) -> str:
    return "–" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.2f}" if x < 10 else f"{x:.1f}")


def ratio(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}x" if x < 10 else f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x"


def met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**not met**")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def machine(doc: dict) -> str:
    m = doc.get("machine", {})
    gpu = m.get("cuda") or "no GPU"
    threads = doc.get("torch_threads") or doc.get("settings", {}).get("torch_threads") or m.get("torch_threads")
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    return (f"{m.get('cpu', '?')} ({m.get('cpu_count', '?')} cores{mem}), {gpu}, torch {m.get('torch', '?')} "
            f"with {threads} thread(s)")


def measured_at(row: dict, doc: dict) -> str:
    """'date, commit' of a row measured in its own run (the curves add rows a run at a time)."""
    date = row.get("date") or doc.get("date") or "?"
    commit = row.get("git_commit") or doc.get("machine", {}).get("git_commit") or ""
    return f"{date[:10]}, {commit[:7]}" if commit else date[:10]


def caption(doc: dict, data: str, section: dict | None = None) -> str:
    """The line under a table: data and split, machine, date and commit. A section measured on its
    own (`python -m bench.findings --only ...`) carries its own date and machine; one kept from an
    older run with a date but no machine says so rather than borrowing the file's machine."""
    quick = " **Quick variant** (small, for CI: not for conclusions)." if doc["_file"].endswith("_quick.json") else ""
    source, date = doc, doc.get("date", "?")
    if section is not None and "measured_at" in section:
        date = section["measured_at"]
        if "machine" not in section:
            return (f"*Data: {data}. Date: {date} (machine and commit not recorded for this section). "
                    f"Source: `bench/results/{doc['_file']}`.*{quick}")
        source = section
    commit = (source.get("machine", {}).get("git_commit") or "")[:10]
    return (f"*Data: {data}. Machine: {machine(source)}. Date: {date}"
            f"{f', commit {commit}' if commit else ''}. Source: `bench/results/{doc['_file']}`.*{quick}")


class Report:
    def __init__(self, docs: dict[str, dict], out: Path):
        self.docs, self.out = docs, out
        self.parts: list[str] = []
        self.targets: list[tuple[str, str, str, str]] = []  # (area, target, measured, met)
        self.plots_dir = out.parent / "results"
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            self.plt = plt
            self.plots_dir.mkdir(parents=True, exist_ok=True)
        except ImportError:
            self.plt = None

    def add(self, text: str) -> None:
        self.parts.append(text)

    def target(self, area: str, what: str, measured: str, flag: bool | None) -> None:
        """A row of the summary; `self.current` is the result it comes from (quick ones are marked)."""
        source = getattr(self, "current", None) or {}
        if source.get("_file", "").endswith("_quick.json"):
            measured += " *(quick variant)*"
        self.targets.append((area, what, measured, met(flag)))

    def use(self, name: str, what: str) -> dict | None:
        """The result `name` (and make it the current one), or None after saying how to measure it."""
        doc = self.current = self.docs.get(name)
        if not doc:
            self.missing(name, what)
        return doc

    def missing(self, name: str, what: str) -> None:
        self.add(f"*No `{name}` result yet: run `python -m bench.run_all --only {name}` (or `make bench`) to "
                 f"measure {what}.*")

    def plot(self, name: str, draw, alt: str) -> None:
        if self.plt is None:
            self.add(f"*(plot `{name}` not drawn: matplotlib is not installed; `pip install matplotlib==3.11.2`)*")
            return
        fig = self.plt.figure(figsize=(7.5, 4.2), dpi=110)
        try:
            draw(fig)
            fig.tight_layout()
            path = self.plots_dir / f"{name}.png"
            fig.savefig(path)
        finally:
            self.plt.close(fig)
        rel = path.relative_to(self.out.parent)
        self.add(f"![{alt}]({rel.as_posix()})")


# ============================================================================ sections

def sec_search(r: Report) -> None:
    r.add("## Speech → image query latency (end to end, decoded audio → ranked ids)")
    doc = r.use("search_latency", "query latency")
    if not doc:
        return
    r.add("Each mode runs on each query in turn. *cascade*: Whisper ASR → MiniLM → nearest captions; "
          "*coarse-shared*: speech head into the locked MiniLM space vs the image head (the app's coarse mode); "
          "*vgs-coarse / vgs-ctf / vgs-fine*: FaST-VGS dual encoder, coarse top-100 reranked by the "
          "cross-attention scorer, or every image scored by it. Anchors (FaST-VGS on Places, GPU): coarse "
          f"{doc['anchors_fast_vgs_places_ms']['coarse']} ms, fine {doc['anchors_fast_vgs_places_ms']['fine']} ms, "
          f"CTF {doc['anchors_fast_vgs_places_ms']['coarse-to-fine']} ms (CTF/coarse = 2.0).")
    models = ", ".join(f"{k}: `{v['run']}` ({v.get('source', 'bench run')}; {v['trained_on']}"
                       + (f", {v['train_pairs']} pairs)" if v.get("train_pairs") else ")")
                       for k, v in doc["models"].items())
    for g in doc["galleries"]:
        _search_gallery(r, doc, g, models)
    _search_plot(r, doc)
    if doc.get("synthetic"):
        _search_synthetic(r, doc)


def _search_gallery(r: Report, doc: dict, g: dict, models: str) -> None:
    """One real gallery's modes table, targets, K_c sweep and stage timings."""
    q = doc["queries"]
    r.add(f"### Gallery of {g['n_images']:,} real images")
    rows = []
    for mode, m in g["modes"].items():
        lat = m["latency_ms"]
        rows.append([mode, ms(lat["p50_ms"]), ms(lat["p95_ms"]), fmt(m["R@1"]), fmt(m["R@5"]), fmt(m["R@10"]),
                     m["n_queries"]])
    r.add(table(["mode", "p50 ms", "p95 ms", "R@1", "R@5", "R@10", "queries"], rows))
    ra, t = dict(g["ratios"]), dict(g["targets"])
    sub = g["fine_subset"]
    chance = min(1.0, 10 / g["n_images"])
    ctf_vs_fine = f"{fmt(sub['vgs-ctf']['R@10'])} vs {fmt(sub['vgs-fine']['R@10'])}"
    if max(sub["vgs-ctf"]["R@10"], sub["vgs-fine"]["R@10"]) <= 2 * chance:
        # two models at chance "match" trivially: say so instead of claiming the target
        ctf_vs_fine += f" (both within 2x chance R@10 = {fmt(chance)}: not informative)"
        t["ctf_R10_at_least_0.99x_fine"] = None
    r.add(table(["target", "measured", ""], [
        ["CTF within 1.5x of coarse (p50)", f"CTF/coarse = {ratio(ra['ctf_over_coarse'])}",
         met(t["ctf_within_1.5x_coarse"])],
        [f"CTF R@10 ≥ 0.99x fine (same {sub['n_queries']} queries)", ctf_vs_fine,
         met(t["ctf_R10_at_least_0.99x_fine"])],
        ["VGS coarse ≥ 5x faster than cascade at ≥ R@10",
         f"{ratio(ra['cascade_over_vgs_coarse'])}, R@10 {fmt(g['modes']['vgs-coarse']['R@10'])} vs "
         f"{fmt(g['modes']['cascade']['R@10'])}",
         met(t["vgs_coarse_5x_faster_than_cascade_at_equal_or_better_R10"])],
        ["shared-space coarse ≥ 5x faster than cascade at ≥ R@10",
         f"{ratio(ra['cascade_over_coarse_shared'])}, R@10 {fmt(g['modes']['coarse-shared']['R@10'])} vs "
         f"{fmt(g['modes']['cascade']['R@10'])}",
         met(t["shared_coarse_5x_faster_than_cascade_at_equal_or_better_R10"])],
    ]))
    n = f"{g['n_images']:,} images"
    r.target("search", f"CTF ≤ 1.5x coarse ({n})", ratio(ra['ctf_over_coarse']), t["ctf_within_1.5x_coarse"])
    r.target("search", f"CTF R@10 ≥ 0.99x fine ({n})", ctf_vs_fine, t["ctf_R10_at_least_0.99x_fine"])
    r.target("search", f"coarse ≥ 5x faster than cascade at ≥ accuracy ({n}; VGS / shared)",
             f"{ratio(ra['cascade_over_vgs_coarse'])} / {ratio(ra['cascade_over_coarse_shared'])}",
             t["vgs_coarse_5x_faster_than_cascade_at_equal_or_better_R10"]
             or t["shared_coarse_5x_faster_than_cascade_at_equal_or_better_R10"])
    if g.get("ctf_k_coarse_sweep"):
        sw = g["ctf_k_coarse_sweep"]
        r.add("CTF as the number of reranked candidates K_c varies (same queries; coarse p50 "
              f"{ms(g['modes']['vgs-coarse']['latency_ms']['p50_ms'])} ms, R@10 "
              f"{fmt(g['modes']['vgs-coarse']['R@10'])}):")
        r.add(table(["K_c", "p50 ms", "CTF/coarse", "R@1", "R@10"],
                    [[kc, ms(v["p50_ms"]), ratio(v["p50_ms"] / g["modes"]["vgs-coarse"]["latency_ms"]["p50_ms"]),
                      fmt(v["R@1"]), fmt(v["R@10"])] for kc, v in sw.items()]))
    stages = "; ".join(f"{mode}: " + ", ".join(f"{k} {ms(v)}" for k, v in m["stages_p50_ms"].items())
                       for mode, m in g["modes"].items())
    r.add(f"Stage p50 (ms): {stages}.")
    r.add(caption(doc, f"queries: {q['set']} split {q['split']}, {q['what']} ({q['n']}); gallery: "
                       f"{', '.join(f'{k} {v}' for k, v in g['composition'].items())} (all splits, real images); "
                       f"models: {models}"))


def _search_plot(r: Report, doc: dict) -> None:
    """The p50-latency-per-mode bar chart over every gallery size."""
    def draw(fig):
        ax = fig.add_subplot(111)
        modes = list(doc["galleries"][0]["modes"])
        width = 0.8 / len(doc["galleries"])
        for i, g in enumerate(doc["galleries"]):
            xs = [j + i * width for j in range(len(modes))]
            ax.bar(xs, [g["modes"][m]["latency_ms"]["p50_ms"] for m in modes], width, label=f"{g['n_images']:,} images")
        ax.set_xticks([j + width * (len(doc["galleries"]) - 1) / 2 for j in range(len(modes))], modes)
        ax.set_yscale("log")
        ax.set_ylabel("p50 ms per query (log)")
        ax.set_title("Speech → image query latency by mode")
        ax.legend()

    r.plot("search_latency", draw, "p50 latency per mode and gallery size")


def _search_synthetic(r: Report, doc: dict) -> None:
    """The index-only table at larger sizes (synthetic vectors)."""
    r.add("### Index part at larger sizes (synthetic vectors)")
    rows = []
    for s in doc["synthetic"]:
        for kind in ("flat", "hnsw"):
            k = s[kind]
            rows.append([f"{s['n']:,}", kind, fmt(k["build_s"]), ms(k["search_p50_ms"]),
                         fmt(k["recall_at_10_vs_flat"]),
                         ms(k["composed_ms"]["coarse"]), ms(k["composed_ms"]["coarse-to-fine"]),
                         ms(s.get("fine_extrapolated_ms")) if kind == "flat" else ""])
    r.add(table(["vectors", "index", "build s", "search p50 ms", "recall@10 vs flat", "coarse ms",
                 "CTF ms", "fine ms (extrapolated)"], rows))
    s0 = doc["synthetic"][0]
    r.add(caption(doc, f"synthetic cross-modal vectors (d = {s0['dim']}, {s0['n_queries']} queries; "
                       "bench.index.cross_modal_data), not images; coarse / CTF = measured index latency + the "
                       "measured per-query speech encoding (+ rerank of 100 candidates) from the first real "
                       "gallery; fine = encoding + the measured fine cost per pair x N"))


def sec_encoders(r: Report) -> None:
    r.add("## Encoder throughput")
    doc = r.docs.get("speech_encoder")
    r.current = doc
    if doc:
        rows = []
        for name, s in doc["results"].items():
            modes = s["modes"]
            naive = modes["padded30_one_by_one"]["ms_per_item"]
            best = modes["utterance_batched"]["ms_per_item"]
            for mode, m in modes.items():
                rows.append([name, mode, ms(m["ms_per_item"]), fmt(1000.0 / m["ms_per_item"]), m["n_items"]])
            speed = naive / best
            r.target("encoders", f"Whisper utterance-length batched ≥ 5x naive 30-s padded one-by-one ({name})",
                     ratio(speed), speed >= 5)
            rows.append([name, "**best vs naive**", f"**{ratio(speed)}**", "target ≥ 5x", met(speed >= 5)])
        r.add(table(["set", "mode", "ms/item", "items/s", "items"], rows))
        r.add(caption(doc, "FSDD spoken digits (people; evaluation-only split test) and LibriVox sentences "
                           "(pocketsphinx-testdata, split test); audio decoded before timing (log-mel + encoder)"))
    else:
        r.missing("speech_encoder", "Whisper encoding modes")
    doc = r.docs.get("features")
    r.current = doc
    if doc:
        rows = [[x["encoder"], x["modality"], fmt(x["batched"]["items_per_s"]), fmt(x["one_by_one"]["items_per_s"]),
                 ratio(x['batched_speedup']), ratio(x['hit_vs_recompute_speedup'])] for x in doc["results"]]
        r.add(table(["encoder", "modality", "batched items/s", "one-by-one items/s", "batched speed-up",
                     "cache hit vs recompute"], rows))
        r.add(caption(doc, doc.get("data", "")))
    else:
        r.missing("features", "tower throughput (images/s)")


def sec_index(r: Report) -> None:
    r.add("## Vector index: flat / IVF / HNSW")
    doc = r.use("index", "index build and query latency")
    if not doc:
        return
    rows, points = [], []
    for run in doc["runs"]:
        for kind, k in run["kinds"].items():
            rec = k.get("recall_at_10", k.get("recall_at_10_vs_flat"))
            rows.append([f"{run['n']:,}", kind, fmt(k["build_s"]), ms(k["single_query_ms"]["p50_ms"]),
                         ms(k["single_query_ms"]["p95_ms"]), f"{k['batched']['per_query_ms_p50']:.4f}",
                         fmt(rec if rec is not None else 1.0)])
            points.append((run["n"], kind, k["single_query_ms"]["p50_ms"], rec if rec is not None else 1.0))
    r.add(table(["vectors", "index", "build s", "single p50 ms", "single p95 ms", "batched ms/query",
                 "recall@10 vs exact"], rows))
    tgt = doc["target"]
    at = [p for p in points if p[0] == tgt["at_n"] and p[1] != "flat"]
    ok = [p for p in at if p[2] <= tgt["single_query_p50_ms_max"] and p[3] >= tgt["recall_at_10_min"]]
    measured = "; ".join(f"{k}: {ms(t)} ms, recall {fmt(rc)}" for _, k, t, rc in at) or f"no run at {tgt['at_n']:,}"
    r.target("index", f"single-query p50 ≤ {tgt['single_query_p50_ms_max']} ms at {tgt['at_n']:,} with recall@10 ≥ "
                      f"{tgt['recall_at_10_min']}", measured, bool(ok) if at else None)
    r.add(f"Target at {tgt['at_n']:,} vectors: p50 ≤ {tgt['single_query_p50_ms_max']} ms with recall@10 ≥ "
          f"{tgt['recall_at_10_min']} against exact: {met(bool(ok)) if at else 'n/a (no 1M run)'} ({measured}).")
    r.add(caption(doc, f"synthetic cross-modal vectors, d = {doc['params']['dim']}, {doc['params']['queries']} "
                       "queries with a modality offset (bench.index.cross_modal_data)"))

    def draw(fig):
        ax = fig.add_subplot(111)
        for kind, marker in (("flat", "o"), ("ivf", "s"), ("hnsw", "^")):
            pts = [p for p in points if p[1] == kind]
            ax.scatter([p[2] for p in pts], [p[3] for p in pts], marker=marker, s=60, label=kind)
            for p in pts:
                ax.annotate(f"{p[0]:,}", (p[2], p[3]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("single-query p50 ms (log)")
        ax.set_ylabel("recall@10 vs exact")
        ax.axvline(tgt["single_query_p50_ms_max"], ls="--", c="gray")
        ax.axhline(tgt["recall_at_10_min"], ls="--", c="gray")
        ax.set_title("Index latency vs recall (cross-modal queries)")
        ax.legend()

    r.plot("index", draw, "index latency vs recall")


def sec_default_model(r: Report) -> None:
    r.add("## The default model (`xmodal-default`) against its targets and the untrained baselines")
    doc = r.use("default_model", "the default model's targets and the baselines")
    if not doc:
        return
    base = doc["baselines"]
    if doc.get("quick"):
        c = base["fsdd_cascade"]
        r.add(table(["baseline", "FSDD top-1", "ms / query"], [["cascade (Whisper ASR → nearest digit word)",
                                                                fmt(c["top1"]), ms(c["ms_per_query"])]]))
        r.add(caption(doc, doc["data"]["fsdd"]))
        return
    model = doc["default_model"]
    res = model["results"]
    z, c, sp = res["fsdd_zeroshot"], res["tuxpaint_caption_to_image"], res.get("tuxpaint_speech_to_image", {})
    t = doc["targets"]
    r.target("default model", "FSDD zero-shot top-1 ≥ 0.95 (10 bare digit words, template {})", fmt(z["top1"]),
             z["top1"] >= t["fsdd_top1"])
    r.target("default model", "Tux Paint caption → image R@1 ≥ 0.45 (held-out fifth)", fmt(c["r@1"]),
             c["r@1"] >= t["tux_r@1"])
    r.target("default model", "Tux Paint caption → image R@10 ≥ 0.85 (held-out fifth)", fmt(c["r@10"]),
             c["r@10"] >= t["tux_r@10"])
    clean = doc.get("clean_home", {})
    total = clean.get("wall_seconds")
    r.target("default model", "trains in < 15 min on 2 CPU cores (from an empty home, data sets and TTS included)",
             f"{total / 60:.1f} min" if total else f"– ({clean.get('error', 'not measured')})",
             None if total is None else total < 900)
    rows = [["xmodal-default (speech head, CWCL)", fmt(z["top1"]), fmt(z.get("top5")),
             fmt(z.get("top1_without_dev_speaker")), ms(z.get("ms_per_query"))]]
    for key, name in (("fsdd_cascade", "cascade: Whisper ASR → nearest digit word"),
                      ("fsdd_asif", "ASIF over synthetic-speech anchors (Whisper mean-pooled)"),
                      ("fsdd_asif_tail", "ASIF, Whisper with the default model's 0.6 s tail")):
        b = base.get(key)
        if b:
            rows.append([f"{name} ({b.get('anchors', '')} anchors)" if "anchors" in b else name, fmt(b["top1"]), "–",
                         fmt(b.get("top1_without_dev_speaker")), ms(b.get("ms_per_query"))])
    r.add("### Spoken digits (FSDD), zero-shot")
    r.add(table(["model", "top-1", "top-5", "top-1 without the dev speaker", "ms / query"], rows))
    q = doc.get("quoted_in_issue", {})
    r.add(f"The issue quotes cascade {fmt(q.get('fsdd_cascade_top1'))} at ~{q.get('fsdd_cascade_ms')} ms and ASIF "
          f"{fmt(q.get('fsdd_asif_top1'))} at ~{q.get('fsdd_asif_ms')} ms, measured elsewhere; the rows above were "
          "measured here, in this run.")
    r.add(caption(doc, doc["data"]["fsdd"]))
    rows = [["xmodal-default (image head + ImageNet class prior, CWCL)", fmt(c["r@1"]), fmt(c["r@5"]), fmt(c["r@10"])]]
    for key, name in (("tuxpaint_asif", "ASIF over the image training pairs"),
                      ("tuxpaint_ridge", "ridge map EfficientNet → MiniLM")):
        b = base.get(key)
        if b:
            rows.append([name, fmt(b["r@1"]), fmt(b["r@5"]), fmt(b["r@10"])])
    r.add("### Tux Paint caption → image")
    r.add(table(["model", "R@1", "R@5", "R@10"], rows))
    r.add(caption(doc, doc["data"]["tuxpaint"]))
    if sp:
        r.add("### People's spoken descriptions → image")
        r.add(table(["query path", "R@1", "R@5", "R@10"], [
            ["speech head (end to end)", fmt(sp["model_r@1"]), fmt(sp["model_r@5"]), fmt(sp["model_r@10"])],
            ["cascade: Whisper ASR → MiniLM → same image head", fmt(sp["cascade_r@1"]), fmt(sp["cascade_r@5"]),
             fmt(sp["cascade_r@10"])],
            ["the written caption (reference)", fmt(sp["text_r@1"]), fmt(sp["text_r@5"]), fmt(sp["text_r@10"])]]))
        r.add(caption(doc, f"{doc['data']['spoken_descriptions']}: {sp['queries']} recordings → {sp['gallery']} images"))
    if total:
        cz, cc = clean["results"]["fsdd_zeroshot"], clean["results"]["tuxpaint_caption_to_image"]
        r.add("### Training it from an empty home (what a fresh machine's first `make run` does)")
        r.add(table(["wall time", "peak memory", "seconds per stage", "FSDD top-1", "Tux Paint R@1 / R@10"],
                    [[f"{total / 60:.1f} min", f"{clean['peak_rss_gib']} GiB",
                      ", ".join(f"{k} {v:.0f}" for k, v in clean["seconds"].items() if k != "total"),
                      fmt(cz.get("top1")), f"{fmt(cc['r@1'])} / {fmt(cc['r@10'])}"]]))
        r.add("The tables above measure the model in the benchmark's home; this row retrains the same committed "
              "recipe from nothing in a child process (two such builds gave identical figures). Where the two "
              "differ, the benchmark's home reused data sets built by an earlier revision: a built set is kept "
              "until `xmodal data build NAME` rebuilds it.")
        r.add(caption(doc, "the same splits as above"))


def sec_adapt(r: Report) -> None:
    r.add("## Spoken vocabulary adaptation: direct speech vs the ASR cascade on people's voices")
    doc = r.docs.get("adapt")
    r.current = doc
    if not doc:
        r.add("*No `adapt` result yet: run `python -m bench.adapt` to measure direct speech search.*")
        return
    met_ = doc.get("met", {})
    base = doc["base"]
    r.add(f"The head in use: run {base['run_id']}, {base['vocabulary']} names, held-out synthetic voices top-1 "
          f"{fmt(base['heldout'].get('heldout_top1'))} / top-5 {fmt(base['heldout'].get('heldout_top5'))} "
          f"(`auto` threshold {fmt(base['threshold'])}).")
    tux = doc.get("tuxpaint")
    if tux:
        n, p = tux["names"], tux["pictures"]
        d, c = n["direct"], n["cascade"]
        r.target("adaptation", "Tux Paint people → stamp name: direct top-1 ≥ 0.75", fmt(d["top1"]),
                 met_.get("tux_name_top1>=0.75"))
        r.target("adaptation", "Tux Paint people → stamp name: direct top-10 ≥ 0.85", fmt(d["top10"]),
                 met_.get("tux_name_top10>=0.85"))
        r.target("adaptation", "Tux Paint people → picture: direct R@10 ≥ cascade R@10",
                 f"{fmt(p['direct']['r@10'])} vs {fmt(p['cascade']['r@10'])}", met_.get("tux_picture_r@10>=cascade"))
        r.target("adaptation", "direct p50 ≤ 1/10 of the cascade's", f"{ms(d['p50_ms'])} vs {ms(c['p50_ms'])}",
                 met_.get("direct_p50<=cascade/10"))
        r.add("### Tux Paint: people's spoken descriptions → the stamp's name, and → its picture")
        r.add(table(["path", "name top-1", "top-5", "top-10", "ms p50"],
                    [[k, fmt(v["top1"]), fmt(v["top5"]), fmt(v["top10"]), ms(v["p50_ms"])]
                     for k, v in (("direct (adapted head)", d), ("cascade (Whisper → MiniLM)", c))]))
        r.add(table(["search mode", "picture R@1", "R@5", "R@10", "ms p50", "ms p95"],
                    [[m, fmt(v["r@1"]), fmt(v["r@5"]), fmt(v["r@10"]), ms(v["p50_ms"]), ms(v["p95_ms"])]
                     for m, v in p.items() if isinstance(v, dict)]))
        r.add(caption(doc, f"the {n['n']} people's `*_desc.ogg` recordings (never trained on) among all {n['names']} "
                           f"stamp names, and among the default gallery's {p.get('gallery_items')} pictures"))
    _adapt_more(r, doc, met_)


def _adapt_more(r: Report, doc: dict, met_: dict) -> None:
    kt, fs, auto, timing = doc.get("ktuberling"), doc.get("fsdd"), doc.get("auto"), doc.get("timing")
    timing_doc = r.docs.get("adapt_timing")  # `--only timing --out adapt_timing`: re-measured on its own
    if timing_doc and timing_doc.get("timing"):
        timing, met_ = timing_doc["timing"], {**met_, **timing_doc.get("met", {})}
    if kt:
        p = kt["pictures"]
        r.target("adaptation", "ktuberling people → object: direct top-1 ≥ cascade top-1",
                 f"{fmt(p['direct']['r@1'])} vs {fmt(p['cascade']['r@1'])}", met_.get("ktuberling_top1>=cascade"))
        r.add("### ktuberling: people's English words → the object's picture")
        r.add(table(["search mode", "R@1", "R@5", "R@10", "ms p50"],
                    [[m, fmt(v["r@1"]), fmt(v["r@5"]), fmt(v["r@10"]), ms(v["p50_ms"])] for m, v in p.items()]))
        a = kt["adaptation"]
        r.add(f"Adapting to the gallery ({a['mode']}, {a['new_entries']} new names, {a['clips_made']} clips "
              f"synthesised): {a['seconds']['total']:.0f} s.")
        r.add(caption(doc, f"{p['direct']['n']} recordings of ktuberling-data whose object a theme draws, "
                           f"{kt['gallery_items']} pictures"))
    if fs:
        r.target("adaptation", "FSDD zero-shot top-1 ≥ 0.95 (adapted head)", fmt(fs["top1"]), met_.get("fsdd_top1>=0.95"))
        r.add(f"FSDD through the adapted head: top-1 {fmt(fs['top1'])} over {fs['n']} clips (" + ", ".join(
            f"{k.split(':')[-1]} {fmt(v)}" for k, v in fs["by_speaker"].items()) + ").")
    if auto:
        res = auto["results"]
        r.target("adaptation", "auto R@10 ≥ the better of direct and cascade (a third of the names out of vocabulary)",
                 f"{fmt(res['auto']['r@10'])} vs {fmt(max(res['direct']['r@10'], res['cascade']['r@10']))}",
                 met_.get("auto_r@10>=best"))
        r.target("adaptation", "auto p50 ≤ 1/3 of the cascade's", f"{ms(res['auto']['p50_ms'])} vs "
                 f"{ms(res['cascade']['p50_ms'])}", met_.get("auto_p50<=cascade/3"))
        r.add("### `auto` on a mixed set: a third of the recordings' names left out of the adaptation")
        r.add(table(["mode", "R@1", "R@10", "ms p50", "answered directly"],
                    [[m, fmt(v["r@1"]), fmt(v["r@10"]), ms(v["p50_ms"]), fmt(v.get("answered_direct"))]
                     for m, v in res.items()]))
        r.add(caption(doc, f"{auto['queries_in_vocabulary']} recordings in vocabulary + "
                           f"{auto['queries_out_of_vocabulary']} out of it"))
    if timing:
        first, second = list(timing.items())
        r.target("adaptation", "adapt to 1,000 new names ≤ 5 min", f"{first[1]['seconds']['total']:.0f} s",
                 met_.get("adapt_1000<=300s"))
        r.target("adaptation", "re-adapt after 10 new names ≤ 30 s", f"{second[1]['seconds']['total']:.0f} s",
                 met_.get("readapt_10<=30s"))
        r.add(table(["adaptation", "clips", "synthesised", "seconds (speech / features / training / calibration / total)"],
                    [[k, v["clips"], v["synthesised"], " / ".join(f"{x:.0f}" for x in v["seconds"].values())]
                     for k, v in timing.items()]))
        r.add(caption(timing_doc or doc, "general English words never spoken in this home, 10 voices each; the "
                                         "old clips the first adaptation replays cached, as after an earlier "
                                         "adaptation (`python -m bench.adapt --only timing --timing-voices 10 "
                                         "--out adapt_timing`)"))
    rows = doc.get("voices")
    if rows:
        r.add("### Accuracy vs voices per name")
        r.add(table(["voices per name", "clips", "held-out voices top-1", "people (Tux Paint) top-1", "top-10"],
                    [[row["voices"], row["clips"], fmt(row["heldout_top1"]), fmt(row["tux_people"]["top1"]),
                      fmt(row["tux_people"]["top10"])] for row in rows]))
        if doc.get("voices_note"):
            r.add(f"*{doc['voices_note']}.*")
    vocab = r.docs.get("adapt_vocabulary") or (doc if doc.get("vocabulary") else None)
    if vocab:
        r.add("### Accuracy vs vocabulary size")
        r.add("Held-out top-1 is among the whole vocabulary of the row; people's top-1 and top-10 are among the "
              "same 774 stamp names in every row, so they show what the added words cost the gallery's own names.")
        r.add(table(["vocabulary", "entries", "clips", "held-out voices top-1", "people (Tux Paint) top-1", "top-10",
                     "adaptation s (speech / features / training)", "measured"],
                    [[f"{row['factor']}x", row["entries"], row["clips"], fmt(row["heldout_top1"]),
                      fmt(row["tux_people"]["top1"]), fmt(row["tux_people"]["top10"]),
                      " / ".join(f"{row['seconds'][k]:.0f}" for k in ("speech", "features", "training")),
                      measured_at(row, vocab)]
                     for row in vocab["vocabulary"]]))
        r.add("Clips and features are cached by content, so a row's speech and features seconds count only what "
              "earlier runs (smaller rows, or an interrupted run) had not made; the 1x row started from a cold home.")
        r.add(caption(vocab, vocab.get("note", "the default vocabulary plus general English words")))


def sec_vgs(r: Report) -> None:
    r.add("## FaST-VGS out of the box: coarse-to-fine speech → picture search")
    doc = r.docs.get("vgs")
    r.current = doc
    if not doc:
        r.add("*No `vgs` result yet: run `python -m bench.vgs` to measure the shipped FaST-VGS.*")
        return
    met_, kc = doc.get("met", {}), doc["k_coarse"]
    lat = doc.get("latency", {})
    for split, what in (("people", "Tux Paint people's recordings"), ("synthetic", "held-out synthetic voices")):
        res = doc.get(split)
        if not res:
            continue
        ctf, coarse = res[f"ctf@{kc}"], res["coarse"]
        r.target("FaST-VGS", f"{what} → picture: CTF R@1 ≥ coarse R@1 + 0.05",
                 f"{fmt(ctf['r@1'])} vs {fmt(coarse['r@1'])}", met_.get(f"{split}: ctf_r@1>=coarse_r@1+0.05"))
        if "fine" in res:
            r.target("FaST-VGS", f"{what}: CTF R@10 ≥ 0.99 × fine R@10", f"{fmt(ctf['r@10'])} vs {fmt(res['fine']['r@10'])}",
                     met_.get(f"{split}: ctf_r@10>=0.99*fine_r@10"))
    if f"coarse-to-fine@{kc}" in lat and "coarse" in lat:
        r.target("FaST-VGS", f"CTF p50 ≤ 2 × coarse p50 (K_c {kc})",
                 f"{ms(lat[f'coarse-to-fine@{kc}']['p50_ms'])} vs {ms(lat['coarse']['p50_ms'])}",
                 met_.get("ctf_p50<=2x_coarse_p50"))
    r.add(f"The shipped run {doc['run_id']} (`assets/models/xmodal-default-vgs/`): coarse = the adapted head (run "
          f"{doc['adapted_run']}) against the gallery's fused caption + picture rows, through linear adapters; fine = "
          f"a cross-attention scorer over Whisper frames and EfficientNet grids, residual on coarse; K_c = {kc}.")
    rows = []
    for split in ("people", "synthetic"):
        for name, v in (doc.get(split) or {}).items():
            rows.append([split, name, fmt(v["r@1"]), fmt(v["r@5"]), fmt(v["r@10"]), v["n"]])
    if rows:
        r.add(table(["queries", "ranking", "R@1", "R@5", "R@10", "n"], rows))
        r.add(caption(doc, f"people: the 65 Tux Paint `*_desc.ogg` recordings (never trained on) → the stamp's picture "
                           f"among the default gallery's {doc['gallery_items']} items; synthetic: clips of the gallery's "
                           "names by voices held out of training → any picture whose caption says it. Every ranking "
                           "ranks the same scores (one coarse and one fine pass per query)"))
    if lat:
        r.add(table(["mode (K_c)", "R@1", "R@10", "ms p50", "ms p95", "stages (p50 ms)"],
                    [[k, fmt(v.get("r@1")), fmt(v.get("r@10")), ms(v["p50_ms"]), ms(v["p95_ms"]),
                      "; ".join(f"{n} {ms(t)}" for n, t in v["stages_p50_ms"].items())] for k, v in lat.items()]))
        r.add(caption(doc, "the same 65 people's recordings through `xmodal_core.search.search`, each dithered so no "
                           "cache answers; models warm"))
    scale = doc.get("scale")
    if scale:
        r.add(table(["gallery items", "coarse ms", "CTF (K_c 100) ms", "fine (every item) ms"],
                    [[n, ms(v["coarse_ms"]), ms(v["ctf@100_ms"]), ms(v["fine_ms"])] for n, v in scale.items()]))
        r.add(caption(doc, "scoring stages only (speech frames computed once); the 10,000-item gallery repeats the "
                           "default gallery's items with a little noise (no larger captioned gallery is installed)"))
    lam = doc.get("lambdas")
    if lam:
        r.add(table(["(λ_coarse, λ_fine)", "people coarse R@1", "people CTF R@1", "people CTF R@10",
                     "synthetic coarse R@1", "synthetic CTF R@1", "synthetic CTF R@10"],
                    [[name, fmt(v["people"]["coarse"]["r@1"]), fmt(v["people"]["ctf@100"]["r@1"]),
                      fmt(v["people"]["ctf@100"]["r@10"]), fmt(v["synthetic"]["coarse"]["r@1"]),
                      fmt(v["synthetic"]["ctf@100"]["r@1"]), fmt(v["synthetic"]["ctf@100"]["r@10"])]
                     for name, v in lam.items()]))
        r.add(caption(doc, "each setting trained with the recipe otherwise unchanged (`python -m bench.vgs --only "
                           "lambdas`); CTF at K_c 100; same query sets as above"))


def sec_training(r: Report) -> None:
    r.add("## Training")
    doc = r.docs.get("training")
    r.current = doc
    if doc:
        rows = []
        for name, s in doc["settings"].items():
            rows.append([name, s["dataset"] + " / " + s["split"], s["pairs"], ms(s["cached_epoch"]["seconds"] * 1000),
                         ms(s["recompute_epoch"]["seconds"] * 1000), ratio(s['cached_speedup']),
                         met(s["cached_speedup"] >= 20), fmt(s["cached_epoch"]["samples_per_s"]),
                         ms(s["step_ms"]["CL"]["p50_ms"]), ms(s["step_ms"]["CWCL"]["p50_ms"]),
                         ratio(s['cwcl_over_cl_step']), met(s["cwcl_over_cl_step"] <= 1.2)])
            r.target("training", f"cached epoch ≥ 20x faster than recomputing ({name})", ratio(s['cached_speedup']),
                     s["cached_speedup"] >= 20)
            r.target("training", f"CWCL step ≤ 1.2x CL ({name}, full train step)", ratio(s['cwcl_over_cl_step']),
                     s["cwcl_over_cl_step"] <= 1.2)
        r.add(table(["setting", "data / split", "pairs", "cached epoch ms", "recompute epoch ms", "speed-up",
                     "≥ 20x", "samples/s (cached)", "CL step ms", "CWCL step ms", "CWCL/CL", "≤ 1.2x"], rows))
        r.add(caption(doc, "; ".join(f"{k}: {v}" for k, v in doc["data"].items())))
        settings = doc["settings"]

        def draw(fig):
            ax = fig.add_subplot(111)
            names = list(settings)
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [settings[n]["cached_epoch"]["seconds"] for n in names], 0.4,
                   label="cached frozen features")
            ax.bar([x + 0.2 for x in xs], [settings[n]["recompute_epoch"]["seconds"] for n in names], 0.4,
                   label="recomputing them")
            ax.set_xticks(list(xs), [f"{n} ({settings[n]['pairs']} pairs)" for n in names])
            ax.set_yscale("log")
            ax.set_ylabel("seconds per epoch (log)")
            ax.set_title("One training epoch: cached vs recomputed features")
            ax.legend()

        r.plot("training_epoch", draw, "epoch time with cached vs recomputed features")
    else:
        r.missing("training", "epoch time cached vs recomputed")
    doc = r.docs.get("losses")
    r.current = doc
    if doc:
        rows = [[name, s["step_ms"]["CL"]["p50_ms"], s["step_ms"]["CWCL"]["p50_ms"],
                 ratio(s['ratio_p50_vs_CL']['CWCL']), met(s["ratio_p50_vs_CL"]["CWCL"] <= 1.2)]
                for name, s in doc["settings"].items()]
        r.add(table(["loss only (forward + backward)", "CL p50 ms", "CWCL p50 ms", "CWCL/CL", "≤ 1.2x"],
                    [[a, ms(b), ms(c), d, e] for a, b, c, d, e in rows]))
        p = doc["params"]
        r.add(caption(doc, f"random unit embeddings, N = {p['n']}, d = {p['d']} (loss cost only)"))


def sec_app(r: Report) -> None:
    r.add("## App")
    doc = r.use("app_latency", "Search page and map latency")
    if not doc:
        return
    sp = doc["search_page"]
    rows = [[mode, ms(m["p50_ms"]), ms(m["max_ms"]), m["n"], fmt(m["first_use_seconds"]),
             ", ".join(f"{k} {ms(v)}" for k, v in m["stages_p50_ms"].items())] for mode, m in sp["modes"].items()]
    r.add(table(["Search mode", "p50 ms", "max ms", "queries", "first use s (model loads)", "stages p50 ms"], rows))
    b = doc["browser"]
    if "skipped" in b or "error" in b:
        what = "skipped" if "skipped" in b else "failed"
        r.add(f"Browser round trip: {what} ({b.get('skipped') or b.get('error')}).")
    else:
        r.add(f"Browser round trip (Chromium, {b['mode']}): click → every result image rendered, p50 "
              f"{ms(b['p50_ms'])} ms (max {ms(b['max_ms'])}, {b['n']} queries; the first, with model loads, "
              f"{ms(b['first_query_ms'])} ms); app start {fmt(b['app_startup_s'])} s.")
    q = doc["queries"]
    r.add(caption(doc, f"queries: {q['set']} split {q['split']}, {q['what']} ({q['n']}); gallery: {sp['gallery']}; "
                       f"{sp['measure']}"))
    mp = doc["maps"]
    rows = [[m, f"{mp['points']:,}", fmt(v["first_seconds"]), fmt(v["first_projection_seconds"]),
             fmt(v["cached_seconds"])] for m, v in mp["methods"].items()]
    r.add(table(["map", "points", "first map s", "of which projection s", "cached map s"], rows))
    extra = f" UMAP's first use in a process (numba compilation) took {fmt(mp['umap_first_use_in_process_seconds'])} s" \
            "more, once per app start." if "umap_first_use_in_process_seconds" in mp else ""
    once = fmt(mp["feature_extraction_seconds_if_not_cached"])
    r.add(f"Features were cached (one-off extraction: {once} s)." + extra)
    r.add(caption(doc, f"{mp['set']} split {mp['split']}, {mp['model']}; {mp['measure']}"))


FINDINGS_TEMPLATES = ("simple k=1", "simple k=5", "simple k=10", "general k=48")


def sec_findings(r: Report) -> None:
    r.add("## The papers' findings, in small")
    doc = r.use("findings", "the papers' findings")
    if not doc:
        return
    s = doc["sections"]
    _findings_cwcl(r, doc, s)
    _findings_lock_location(r, doc, s)
    _findings_image_ceiling(r, doc, s)
    _findings_maestro(r, doc, s)
    _findings_teacher_student(r, doc, s)
    _findings_vgs(r, doc, s)
    _findings_domain_gap(r, doc, s)


def _finding_open(r: Report, v: dict, title: str, *, not_measured: tuple[str, ...] = (),
                  failed: bool = False) -> bool:
    """Heads a findings subsection; True when `v` has results to show. A section that holds one of the
    `not_measured` keys says why it was not measured; with `failed`, one that holds "error" says it failed."""
    r.add(title)
    if any(k in v for k in not_measured):
        why = next((v.get(k) for k in not_measured if v.get(k)), v.get(not_measured[-1]))
        r.add(f"*Not measured: {why}.*")
        return False
    if failed and "error" in v:
        r.add(f"*Failed: {v['error']}*")
        return False
    return bool(v)


def _findings_cwcl(r: Report, doc: dict, s: dict) -> None:
    """CWCL vs CL zero-shot top-1 by template count (speech and image)."""
    v = s.get("cwcl_vs_cl", {})
    if not _finding_open(r, v, "### CWCL vs CL: zero-shot top-1 as the template list shrinks",
                         not_measured=("error", "blocked")):
        return
    rows, notes, checks = [], [], []
    parts = [("FSDD spoken digits (speech)", v.get("speech_fsdd", {}))]
    parts += [(row.get("data", name), row) for name, row in v.get("image", {}).items()
              if isinstance(row, dict) and isinstance(row.get("cwcl"), dict)]
    for title, part in parts:
        if "cwcl" not in part:
            why = part.get("skipped") or part.get("blocked") or part.get("error") or "not measured"
            notes.append(f"{title}: {why}")
            continue
        for loss in ("cwcl", "cl"):
            rows.append([title, loss.upper()] + [fmt(part[loss].get(t)) for t in FINDINGS_TEMPLATES]
                        + [fmt(part[loss].get("bare {}"))])
        drop = {loss: part[loss]["simple k=10"] - part[loss]["simple k=1"] for loss in ("cwcl", "cl")}
        verdict = ("CWCL loses less" if drop["cwcl"] < drop["cl"] else "the same" if drop["cwcl"] == drop["cl"]
                   else "CWCL loses more")
        spread = part.get("drop k=10 -> k=1 std")
        if spread:  # several seeds: means, their spread, and how many seeds agree
            seeds = part.get("seeds", [])
            checks.append(f"{title} (mean ± std over {len(seeds)} seeds): CWCL {fmt(drop['cwcl'])} ± "
                          f"{fmt(spread['cwcl'])}, CL {fmt(drop['cl'])} ± {fmt(spread['cl'])} ({verdict} on "
                          f"average; CWCL drops less in {part.get('cwcl drops less in', '?')})")
        else:
            checks.append(f"{title}: CWCL {fmt(drop['cwcl'])}, CL {fmt(drop['cl'])} ({verdict})")
    r.add(table(["data", "loss", *FINDINGS_TEMPLATES, "bare {}"], rows))
    if checks:
        r.add("Top-1 lost going from 10 simple templates to 1 (k=10 minus k=1; negative = gained): "
              + "; ".join(checks) + ".")
    if notes:
        r.add("*" + "; ".join(notes) + ".*")
    img = v.get("image", {})
    data = [v.get("speech_fsdd", {}).get("data"),
            f"images: runs {img.get('runs')} trained on {img.get('trained_on')}"]
    r.add(caption(doc, "; ".join(x for x in data if x), section=v))


def _findings_lock_location(r: Report, doc: dict, s: dict) -> None:
    """Which tower to lock (speech-text)."""
    v = s.get("lock_location", {})
    if not _finding_open(r, v, "### Lock location (speech-text): which tower keeps its pretrained weights",
                         not_measured=("error", "blocked", "skipped")):
        return
    rows = [[lock, fmt(v[lock].get("train_seconds"))] + [fmt(v[lock].get(t)) for t in FINDINGS_TEMPLATES]
            + [fmt(v[lock].get("bare {}"))] for lock in ("none", "speech", "text", "both") if lock in v]
    r.add(table(["locked", "train s", *FINDINGS_TEMPLATES, "bare {}"], rows))
    best = max((row for row in rows), key=lambda row: float(row[4]) if row[4] != "–" else -1)
    r.add(f"Best at 10 simple templates: locked = {best[0]} (the CWCL paper found locking the text tower best).")
    r.add(caption(doc, f"{v.get('data', '')}; {v.get('train_pairs')} training pairs, {v.get('epochs')} epochs, "
                       f"batch {v.get('batch_size')}", section=v))


def _findings_image_ceiling(r: Report, doc: dict, s: dict) -> None:
    """The default image recipe's parts against a per-query oracle."""
    v = s.get("image_ceiling", {})
    title = "### How far the default image recipe's parts go: head, class prior, their mix, and an oracle"
    if not _finding_open(r, v, title, not_measured=("error", "blocked", "skipped")):
        return
    rows = []
    for split, title in (("heldout", "held-out fifth"), ("dev", "dev tenth")):
        part = v.get(split)
        if not part:
            continue
        for row in v["rows"]:
            name = (f"{row} (w = {v['recipe_weight']})" if row == "recipe mix" else
                    f"{row} (w = {', '.join(str(w) for w in part['best weights'])})" if row == "best fixed weight"
                    else row)
            rows.append([title, name] + [f"{part[row][k]:.3f} ± {part['std'][row][k]:.3f}"
                                         for k in ("R@1", "R@5", "R@10")])
    r.add(table(["split", "image side", "R@1", "R@5", "R@10"], rows))
    o = v["heldout"]["per-query oracle"]
    r.add(f"The image embedding is normalize((1 − w) · head + w · prior). \"best fixed weight\" picks w on the "
          "split it is measured on, and the oracle lets each caption take its own w knowing the answer, so no "
          "mix of these two parts can score higher than the oracle row: on the held-out fifth it reaches "
          f"R@1 {fmt(o['R@1'])} / R@10 {fmt(o['R@10'])} against the issue's targets 0.45 / 0.85. Mean ± std over "
          f"{len(v['seeds'])} seeds of the image head.")
    r.add(caption(doc, v.get("data", ""), section=v))


def _findings_maestro(r: Report, doc: dict, s: dict) -> None:
    """Modality gap and direct-vs-ASIF retrieval probes, with the t-SNE plot."""
    v = s.get("maestro", {})
    title = "### Maestro analysis: modality gap and retrieval probes (direct cosine vs ASIF)"
    if not _finding_open(r, v, title, failed=True):
        return
    rows = []
    for name, row in v["sets"].items():
        for space in ("raw", "aligned"):
            p = row[space]
            rows.append([name, f"{space}: {p['towers']}", fmt(p["direct_top1"]), fmt(p["asif_top1"]),
                         fmt(p["chance"]), fmt(p["modality_gap"]), f"{p['queries']} / {p['anchors']} / {p['k']}"])
    r.add(table(["pairs", "space", "direct top-1", "ASIF top-1", "chance", "modality gap",
                 "queries / anchors / k"], rows))
    r.add("Checks: " + "; ".join(f"{k.replace('_', ' ')}: {met(x)}" for k, x in v["checks"].items()) + ".")
    r.add(caption(doc, "; ".join(f"{k}: {row['data']}" for k, row in v["sets"].items()) + f"; {v['protocol']}",
                  section=v))
    tsne = [(name, row["tsne"]) for name, row in v["sets"].items() if "tsne" in row]

    def draw(fig):
        for i, (name, t) in enumerate(tsne[:1]):
            for j, when in enumerate(("before", "after")):
                ax = fig.add_subplot(1, 2, j + 1)
                for mod, color in (("speech", "#dc2626"), ("text", "#2563eb")):
                    pts = t[when]["points"][mod]
                    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=9, c=color, label=mod, alpha=0.7)
                ax.set_title(f"{when} alignment ({name})", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.legend(fontsize=8)

    if tsne:
        r.plot("maestro_tsne", draw, "t-SNE of speech and text embeddings before and after alignment")


def _findings_teacher_student(r: Report, doc: dict, s: dict) -> None:
    """Teacher-student L2: S → T and T → S retrieval."""
    v = s.get("teacher_student", {})
    if not _finding_open(r, v, "### Teacher-student L2: S → T and T → S retrieval", failed=True):
        return
    rows = []
    for data, by_loss in v["results"].items():
        for loss, row in by_loss.items():
            rows.append([data, loss, fmt(row["S->T"]["R@1"]), fmt(row["S->T"]["R@10"]), fmt(row["T->S"]["R@1"]),
                         fmt(row["T->S"]["R@10"])])
    r.add(table(["evaluated on", "loss", "S→T R@1", "S→T R@10", "T→S R@1", "T→S R@10"], rows))
    r.add(f"Finding: {v['finding']} (the paper found T → S higher).")
    r.add(caption(doc, "trained on spoken Tux Paint split train (synthetic voices); evaluated on the splits named "
                       f"in the table; runs {v['runs']}", section=v))


def _findings_vgs(r: Report, doc: dict, s: dict) -> None:
    """FaST-VGS coarse / fine / coarse-to-fine by loss weighting."""
    v = s.get("vgs", {})
    if not _finding_open(r, v, "### FaST-VGS: coarse / fine / coarse-to-fine by loss weighting", failed=True):
        return
    for set_name, title in (("human", "speech by people"), ("synthetic_heldout", "held-out synthetic voices")):
        rows = []
        for row in v["rows"]:
            cells_src = row if set_name == "human" else row.get(set_name)
            if not cells_src:
                continue
            cells = [f"({fmt(row['lambda_c'])}, {fmt(row['lambda_f'])})"]
            for name in ("coarse", "fine", "coarse-to-fine"):
                m = cells_src[name]
                cells += [fmt(m["R@1"]), fmt(m["R@10"]), ms(m["ms_per_query_p50"])]
            rows.append(cells)
        if rows:
            r.add(f"Queries: {v['queries'][set_name] if isinstance(v['queries'], dict) else v['queries']} "
                  f"({title}; fine and its comparison on the first {v.get('fine_queries', 'all')}).")
            r.add(table(["(λc, λf)", "coarse R@1", "coarse R@10", "coarse ms", "fine R@1", "fine R@10",
                         "fine ms", "CTF R@1", "CTF R@10", "CTF ms"], rows))
    vals = [f"({fmt(row['lambda_c'])}, {fmt(row['lambda_f'])}): coarse R@10 "
            f"{fmt(row['val'].get('s2i_coarse_r@10'))}, "
            f"CTF R@10 {fmt(row['val'].get('s2i_ctf_r@10'))}" for row in v["rows"] if row.get("val")]
    if vals:
        r.add("For scale, each run's own validation (synthetic held-out voices, against that split's few dozen "
              "images, epoch picked by it): " + "; ".join(vals) + ".")
    r.add(caption(doc, f"gallery: {v['gallery']}; trained on {v['trained_on']}; queries as named above",
                  section=v))


def _findings_domain_gap(r: Report, doc: dict, s: dict) -> None:
    """Trained on synthetic speech, evaluated on real speech."""
    v = s.get("domain_gap", {})
    if v and "error" not in v:
        r.add("### Trained on synthetic speech, used on real speech")
        rows = [[mode] + [fmt(row.get(k, {}).get(m)) for k in ("human", "synthetic_heldout") for m in ("R@1", "R@10")]
                for mode, row in v["modes"].items()]
        r.add(table(["mode", "people R@1", "people R@10", "synthetic held-out R@1", "synthetic held-out R@10"], rows))
        r.add(f"Chance R@10 = {fmt(v['chance_R@10'])}. The cascade needs no training (its ASR was trained on real "
              "speech); the trained modes learned from synthetic voices only.")
        r.add(caption(doc, "; ".join(f"{k}: {d}" for k, d in v["queries"].items()) + f"; gallery: {v['gallery']}; "
                           f"runs {v['runs']}", section=v))
    elif "error" in v:
        r.add(f"*Domain-gap section failed: {v['error']}*")

def load_docs(results: Path, quick_only: bool) -> dict[str, dict]:
    """name -> its result: the full one if present (else the quick one). Index sizes measured
    separately (`index_1m.json` from `bench/index.py --name index_1m`) join the index table."""
    docs = {}
    if not quick_only:
        parts = [results / "index.json"] + sorted(p for p in results.glob("index_*.json")
                                                  if not p.name.endswith("_quick.json"))
        parts = [p for p in parts if p.is_file()]
        if parts:
            loaded = [json.loads(p.read_text(encoding="utf-8")) for p in parts]
            doc = dict(loaded[0])
            by_n = {}
            for d in loaded:
                for run in d["runs"]:
                    by_n[run["n"]] = run  # the later file wins for a size measured twice
            doc["runs"] = [by_n[n] for n in sorted(by_n)]
            doc["_file"] = " + ".join(p.name for p in parts)
            if len(loaded) > 1:
                doc["date"] = " / ".join(d["date"] for d in loaded)
            docs["index"] = doc
    for bench in BENCHES:
        if bench.name in docs:
            continue
        names = [f"{bench.name}_quick"] if quick_only else [bench.name, f"{bench.name}_quick"]
        for n in names:
            path = results / f"{n}.json"
            if path.is_file():
                doc = json.loads(path.read_text(encoding="utf-8"))
                doc["_file"] = path.name
                docs[bench.name] = doc
                break
    return docs


def build(results: Path, out: Path, quick_only: bool = False) -> str:
    docs = load_docs(results, quick_only)
    r = Report(docs, out)
    for name in ("adapt", "adapt_timing", "adapt_vocabulary", "vgs"):  # measured on their own (python -m bench.adapt / bench.vgs), not by run_all
        path = results / f"{name}.json"
        if path.is_file() and not quick_only:
            docs[name] = {**json.loads(path.read_text(encoding="utf-8")), "_file": path.name}
    for fn in (sec_default_model, sec_adapt, sec_vgs, sec_search, sec_encoders, sec_index, sec_training, sec_app, sec_findings):
        try:
            fn(r)
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as exc:
            r.add(f"*This section could not be drawn from its JSON ({type(exc).__name__}: {exc}); re-run the "
                  "benchmark.*")
    head = [
        "# xmodal — benchmark results",
        "",
        "Generated by `make report` (`python -m bench.report`) from the JSON that `make bench` "
        "(`python -m bench.run_all`) writes under `bench/results/`; do not edit by hand. Every table names its data "
        "split, the machine and the date; ratios come from one run, measured side by side. "
        + ("Only quick-variant results were used." if quick_only else
           "Where a full result is missing, the quick variant's is shown and marked as such."),
        "",
        "## Targets",
        "",
        table(["area", "target", "measured", "status"], r.targets) if r.targets else "*No targets measured yet.*",
        "",
    ]
    missing = [b.name for b in BENCHES if b.name not in docs]
    if missing:
        head.append(f"*Not measured yet: {', '.join(missing)}.*\n")
    if r.plt is None:
        head.append("*Plots were not drawn: matplotlib is not installed (`pip install matplotlib==3.11.2`).*\n")
    text = "\n".join(head) + "\n" + "\n\n".join(r.parts) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="use only the *_quick.json results")
    args = parser.parse_args(argv)
    text = build(args.results, args.out, args.quick)
    n_tables = text.count("\n|---")
    print(f"wrote {args.out} ({n_tables} tables, {text.count('![')} plots)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
