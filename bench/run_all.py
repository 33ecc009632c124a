"""Run every benchmark in a fixed order, each in its own process with a time limit.

    python -m bench.run_all             # everything (JSON under bench/results/); 2-3 hours on 2 busy CPU cores
                                        # the first time (training FaST-VGS and the default model), less after
    python -m bench.run_all --quick     # the small variant (< 10 min), then check each JSON's schema and numbers
    python -m bench.run_all --only index training --quick
    python -m bench.run_all --check-only --quick   # only validate the existing *_quick.json

A failing or timed-out benchmark is reported and the others still run; the exit status is
non-zero when any failed or (with --quick or --check) when a result misses an expected number.
Each benchmark's output goes to `$XMODAL_HOME/bench/logs/NAME[_quick].log`.
The environment passes through (set OMP_NUM_THREADS=1 on a loaded machine; every result
records its torch thread count).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Bench:
    """One benchmark module: `python -m bench.NAME [--quick]` writes results/NAME[_quick].json."""

    name: str
    timeout_s: int  # full run
    quick_timeout_s: int
    schema: tuple[str, ...]  # paths that must hold a finite number (see `validate`)


COMMON = ("date:str", "machine.cpu:str", "machine.cpu_count")

# Fixed order: cheap and independent first; the ones that train models after.
BENCHES: tuple[Bench, ...] = (
    Bench("speech_encoder", 1200, 240, (
        "results.*.modes.utterance_batched.ms_per_item", "results.*.modes.utterance_one_by_one.ms_per_item",
        "results.*.modes.padded30_batched.ms_per_item", "results.*.modes.padded30_one_by_one.ms_per_item",
        "results.*.ratios.padded30_over_utterance_one_by_one", "settings.torch_threads")),
    Bench("losses", 900, 180, (
        "settings.both_trained.ratio_p50_vs_CL.CWCL", "settings.locked_frozen.ratio_p50_vs_CL.CWCL",
        "settings.*.step_ms.CL.p50_ms", "settings.*.step_ms.CWCL.p50_ms")),
    Bench("index", 3600, 240, (
        "runs.*.n", "runs.*.kinds.flat.build_s", "runs.*.kinds.*.single_query_ms.p50_ms",
        "runs.*.kinds.*.batched.per_query_ms_p50", "runs.*.kinds.ivf.recall_at_10|recall_at_10_vs_flat",
        "runs.*.kinds.hnsw.recall_at_10|recall_at_10_vs_flat")),
    Bench("features", 1800, 300, (
        "results.*.batched.items_per_s", "results.*.one_by_one.items_per_s", "results.*.hit_vs_recompute_speedup",
        "torch_threads")),
    Bench("training", 1800, 300, (
        "settings.*.cached_epoch.seconds", "settings.*.recompute_epoch.seconds", "settings.*.cached_speedup",
        "settings.*.cwcl_over_cl_step", "settings.*.cached_epoch.samples_per_s", "settings.*.step_ms.CL.p50_ms",
        "settings.*.pairs", "torch_threads")),
    Bench("search_latency", 5400, 420, (
        "galleries.*.n_images", "galleries.*.modes.*.latency_ms.p50_ms", "galleries.*.modes.*.R@1",
        "galleries.*.modes.*.R@10", "galleries.*.modes.cascade.R@10", "galleries.*.modes.vgs-fine.R@10",
        "galleries.*.ratios.ctf_over_coarse", "galleries.*.ratios.cascade_over_vgs_coarse",
        "galleries.*.fine_subset.vgs-fine.R@10", "synthetic.*.flat.search_p50_ms", "synthetic.*.hnsw.search_p50_ms",
        "synthetic.*.hnsw.recall_at_10_vs_flat", "synthetic.*.hnsw.composed_ms.coarse-to-fine", "queries.n")),
    Bench("app_latency", 1800, 360, (
        "search_page.modes.cascade.p50_ms", "search_page.modes.asif.p50_ms", "search_page.modes.coarse.p50_ms",
        "maps.points", "maps.methods.tsne.first_seconds", "maps.methods.tsne.cached_seconds",
        "maps.methods.umap.first_seconds", "maps.methods.umap.cached_seconds")),
    Bench("default_model", 3600, 300, (
        "baselines.fsdd_cascade.top1", "baselines.fsdd_cascade.ms_per_query",
        "full:default_model.results.fsdd_zeroshot.top1", "full:default_model.results.tuxpaint_caption_to_image.r@1",
        "full:default_model.results.tuxpaint_caption_to_image.r@10", "full:default_model.seconds.total",
        "full:baselines.fsdd_asif.top1", "full:baselines.tuxpaint_asif.r@1", "full:baselines.tuxpaint_ridge.r@10")),
    Bench("findings", 7200, 480, (
        "sections.maestro.sets.*.raw.asif_top1", "sections.maestro.sets.*.aligned.asif_top1",
        "sections.maestro.sets.*.aligned.direct_top1", "sections.maestro.sets.speech_text_human.raw.direct_top1",
        "sections.maestro.sets.*.aligned.modality_gap", "sections.teacher_student.results.*.l2.S->T.R@1",
        "sections.teacher_student.results.*.l2.T->S.R@1", "sections.teacher_student.results.*.cwcl.T->S.R@1",
        "sections.vgs.rows.*.coarse.R@10", "sections.vgs.rows.*.fine.R@10",
        "sections.vgs.rows.*.coarse-to-fine.R@10", "sections.vgs.rows.*.coarse-to-fine.ms_per_query_p50",
        "sections.vgs.rows.*.synthetic_heldout.coarse.R@10", "sections.domain_gap.modes.*.human.R@10",
        "sections.domain_gap.modes.*.synthetic_heldout.R@10",
        *(f"sections.cwcl_vs_cl.image.{d}.{loss}.{t}" for d in ("tuxpaint", "fashion-mnist") for loss in ("cwcl", "cl")
          for t in ("simple k=1", "simple k=5", "simple k=10", "general k=48")),
        "sections.cwcl_vs_cl.speech_fsdd:present", "sections.lock_location:present", "sections.image_ceiling:present",
        *(f"full:sections.image_ceiling.heldout.{row}.{k}" for row in ("recipe mix", "per-query oracle")
          for k in ("R@1", "R@10")),
        *(f"full:sections.cwcl_vs_cl.speech_fsdd.{loss}.{t}" for loss in ("cwcl", "cl")
          for t in ("simple k=1", "simple k=5", "simple k=10", "general k=48")),
        *(f"full:sections.lock_location.{lock}.simple k=1" for lock in ("none", "speech", "text", "both")))),
)
BY_NAME = {b.name: b for b in BENCHES}


# ============================================================================ schema checks

def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(doc: Any, paths: tuple[str, ...] | list[str], quick: bool = False) -> list[str]:
    """Problems with `doc` against `paths`; [] when it passes.

    A path is dot-separated keys (or list indices; `a|b`: the first of these keys present);
    `*` means every element of a list or every value of a dict
    (and there must be at least one). The leaf must be a finite number, unless the path ends
    with `:str` (a non-empty string) or `:present` (the key exists and holds no "error" or
    "blocked" entry; with `quick`, a "skipped" entry is fine). A path starting with `full:` is
    checked only for full results (`quick` False). Example: "galleries.*.modes.cascade.latency_ms.p50_ms".
    """
    problems: list[str] = []
    for spec in paths:
        if spec.startswith("full:"):
            if quick:
                continue
            spec = spec[len("full:"):]
        path, _, kind = spec.partition(":")
        _walk(doc, path.split("."), [], kind, problems, quick)
    return problems


def _walk(node: Any, keys: list[str], seen: list[str], kind: str, problems: list[str], quick: bool = False) -> None:
    where = ".".join(seen) or "(top)"
    if not keys:
        if kind == "str":
            if not (isinstance(node, str) and node):
                problems.append(f"{where}: expected a non-empty string, got {node!r}")
        elif kind == "present":
            refusals = ("error", "blocked") + (() if quick else ("skipped",))
            bad = [k for k in refusals if isinstance(node, dict) and k in node]
            if bad:
                problems.append(f"{where}: {node[bad[0]]}")
        elif not _finite(node):
            problems.append(f"{where}: expected a number, got {node!r}")
        return
    key, rest = keys[0], keys[1:]
    if "|" in key:  # alternatives (a renamed field): the first one present
        key = next((k for k in key.split("|") if isinstance(node, dict) and k in node), key.split("|")[0])
    if key == "*":
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) \
            if isinstance(node, list) else None
        if not children:
            problems.append(f"{where}: expected a non-empty list or mapping, got {type(node).__name__}")
            return
        for k, child in children:
            _walk(child, rest, seen + [str(k)], kind, problems, quick)
        return
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        _walk(node[int(key)], rest, seen + [key], kind, problems, quick)
        return
    if not isinstance(node, dict) or key not in node:
        problems.append(f"{where}: missing {key!r}")
        return
    _walk(node[key], rest, seen + [key], kind, problems, quick)


def result_path(name: str, quick: bool, results: Path = RESULTS) -> Path:
    return results / f"{name}{'_quick' if quick else ''}.json"


def check(bench: Bench, quick: bool, results: Path = RESULTS, since: float | None = None) -> list[str]:
    """Schema problems of one benchmark's result file (also: missing, unreadable, stale)."""
    path = result_path(bench.name, quick, results)
    if not path.is_file():
        return [f"{path.name}: not written"]
    if since is not None and path.stat().st_mtime < since:
        return [f"{path.name}: not rewritten by this run (stale file from {time.ctime(path.stat().st_mtime)})"]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{path.name}: unreadable ({exc})"]
    problems = validate(doc, COMMON + bench.schema, quick=quick)
    if quick and doc.get("quick") is False:
        problems.append(f"{path.name}: says quick=false")
    return [f"{path.name}: {p}" for p in problems]


# ============================================================================ running

def run_one(bench: Bench, quick: bool, timeout_scale: float, extra: list[str]) -> tuple[str, float, str]:
    """(status, seconds, tail of the output); status is "ok", "failed (exit N)" or "timed out"."""
    timeout = (bench.quick_timeout_s if quick else bench.timeout_s) * timeout_scale
    cmd = [sys.executable, "-m", f"bench.{bench.name}", *(["--quick"] if quick else []), *extra]
    from xmodal_core import paths

    log_dir = paths.home() / "bench" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{bench.name}{'_quick' if quick else ''}.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # its own session: the benchmark and anything it started
            proc.wait()
            status = f"timed out after {timeout:.0f} s"
    seconds = time.monotonic() - t0
    tail = log_path.read_bytes()[-1500:].decode("utf-8", "replace")
    return status, seconds, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small variant, then schema checks")
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), default=None, help="run these (in order)")
    parser.add_argument("--skip", nargs="+", choices=list(BY_NAME), default=[], help="leave these out")
    parser.add_argument("--check", action="store_true", help="also check the schema after a full run")
    parser.add_argument("--check-only", action="store_true", help="run nothing; check the existing results")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every time limit")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHES if (args.only is None or b.name in args.only) and b.name not in args.skip]
    started = time.time()
    rows: list[tuple[str, str, float]] = []
    failures: list[str] = []
    if not args.check_only:
        print(f"running {len(chosen)} benchmarks{' (quick)' if args.quick else ''}: "
              f"{', '.join(b.name for b in chosen)}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
              flush=True)
        for bench in chosen:
            print(f"[{dt.datetime.now():%H:%M:%S}] {bench.name} ...", flush=True)
            status, seconds, tail = run_one(bench, args.quick, args.timeout_scale, [])
            rows.append((bench.name, status, seconds))
            print(f"[{dt.datetime.now():%H:%M:%S}] {bench.name}: {status} in {seconds:.0f} s "
                  f"(log: $XMODAL_HOME/bench/logs/)", flush=True)
            if status != "ok":
                failures.append(f"{bench.name}: {status}")
                print("  " + "\n  ".join(tail.strip().splitlines()[-12:]), flush=True)
    problems: list[str] = []
    if args.quick or args.check or args.check_only:
        since = None if args.check_only else started
        for bench in chosen:
            problems += check(bench, args.quick, since=since)
    print("\nsummary:")
    for name, status, seconds in rows:
        print(f"  {name:<16} {status:<28} {seconds:7.0f} s")
    if rows:
        print(f"  {'total':<16} {'':<28} {time.time() - started:7.0f} s")
    if problems:
        print(f"\nschema: {len(problems)} problem(s):")
        for p in problems:
            print(f"  {p}")
    elif args.quick or args.check or args.check_only:
        print("\nschema: every expected number is present")
    return 1 if failures or problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
