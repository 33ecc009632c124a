"""App latency: query to rendered results on the Search page; time to first map (t-SNE, UMAP) and cached.

    python -m bench.app_latency            # 12 spoken queries, 5,000-point maps, browser round trip -> app_latency.json
    python -m bench.app_latency --quick    # 4 queries, ~200-image gallery, 400-point maps, no browser
                                           # -> app_latency_quick.json

Runs in its own xmodal home (`$XMODAL_HOME/bench/app-home`) whose content-keyed caches (weights,
data sets, frozen features, the default gallery's embeddings) link to the main home, so nothing
is re-extracted (the default gallery is copied: its embedding files are keyed by run ids), while
transcripts and 2-D projections start empty: a new recording is never a
cache hit, and the first map is really computed. The shared-space speech and image runs
(`bench.training.shared_space_runs`: the default model in the full run) are registered in that
home's run store and put in use, so `coarse` works as after "use this model".

- Search page: `pages.search.run_search` (what the Search button calls: decode the file, search,
  thumbnails, tables) on the default gallery (Tux Paint + emoji; quick: a ~200-image slice),
  first use (model loads, embedding the gallery once) reported apart; queries = Tux Paint
  descriptions spoken by people (split test). Full mode also times the browser round trip:
  the app in a subprocess, Chromium through Playwright, from the click to the last result
  image rendered (needs `playwright` and /usr/bin/chromium; skipped with the reason otherwise).
- Maps: `analysis.embedding_map` (what the Explorer's Draw button calls, plus the plotly
  figure) for Fashion-MNIST images (split test) under the pretrained EfficientNet tower,
  500 per class = 5,000 points; first (computed) and again (from the projection cache).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write_result  # noqa: E402
from bench.training import ensure_dataset, log, shared_space_runs  # noqa: E402
from xmodal_core.fsio import atomic_path

LINKED = ("models", "datasets")


def make_app_home(main_home: Path, quick: bool) -> Path:
    """A fresh home for the app under `main_home/bench/app-home` (see the module doc). Quick:
    the default gallery is built from every 11th Tux Paint and every 14th emoji record (~200
    images), so first use embeds a couple of hundred images, not 2,400."""
    from xmodal_core.data.manifest import load_manifest, write_manifest

    home = main_home / "bench" / "app-home"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / "models").symlink_to(main_home / "models", target_is_directory=True)
    datasets = home / "datasets"
    datasets.mkdir()
    for sub in (main_home / "datasets").iterdir():
        if quick and sub.name in ("tuxpaint", "emoji"):
            records = load_manifest(sub.name)[:: 11 if sub.name == "tuxpaint" else 14]
            write_manifest(datasets / sub.name / "manifest.jsonl", records)
        elif sub.is_dir():
            (datasets / sub.name).symlink_to(sub, target_is_directory=True)
    gallery = main_home / "galleries" / "default"
    if gallery.is_dir() and not quick:  # copied, not linked: its run embeddings are keyed by run ids
        shutil.copytree(gallery, home / "galleries" / "default", symlinks=True)
    feats = home / "features"
    feats.mkdir()
    for sub in (main_home / "features").iterdir() if (main_home / "features").is_dir() else ():
        if sub.is_dir():  # encoder caches, not the transcripts file
            (feats / sub.name).symlink_to(sub, target_is_directory=True)
    return home


def keep_gallery_embeddings(home: Path, main_home: Path) -> None:
    """Copy the default gallery's pretrained-tower embeddings (not the run-keyed ones) back to
    the main home, so the next run and the app itself start from them."""
    src, dst = home / "galleries" / "default" / "emb", main_home / "galleries" / "default" / "emb"
    if not src.is_dir() or not dst.parent.is_dir():
        return
    dst.mkdir(exist_ok=True)
    for f in src.glob("*.npz"):
        if not f.name.startswith("shared") and not (dst / f.name).exists():
            with atomic_path(dst / f.name) as tmp:
                shutil.copy2(f, tmp)


def register_runs(runs: dict[str, dict]) -> dict[str, int]:
    """Copy the standard runs into this home's run store and put them in use (speech, image)."""
    from xmodal_core import paths, spaces
    from xmodal_core.store import Store

    store = Store()
    ids = {}
    for modality, info in runs.items():
        run_id = store.create_run(f"bench-{info['tag']}", "align", info["config"])
        store.start_run(run_id)
        dst = paths.runs_dir() / str(run_id)
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "heads.safetensors"):
            shutil.copy2(Path(info["run_dir"]) / name, dst / name)
        store.finish_run(run_id, "completed")
        spaces.use_run(run_id, modality, store=store)
        ids[modality] = run_id
    return ids


def _forget_transcripts() -> None:
    """Make the next query a new recording for the ASR cache (memory and disk)."""
    from xmodal_core import paths, spaces

    with spaces._transcripts_lock:
        spaces._transcripts.clear()
    (paths.features_dir() / "transcripts-whisper-tiny.en.json").unlink(missing_ok=True)


def bench_search_page(clips: list[Path], modes: list[str]) -> dict[str, Any]:
    import pages.search as sp
    from xmodal_core import gallery as galleries

    log(f"Search page: {len(clips)} queries x modes {modes}")
    gallery = galleries.open_gallery(galleries.DEFAULT_NAME)
    warm = {}
    for mode in modes:  # first use: load models, (re)build the in-memory index of the gallery
        _forget_transcripts()
        t0 = time.perf_counter()
        sp.run_search("speech-file", None, str(clips[0]), None, "", gallery.name, mode, 12, 100, 90, 8.0)
        warm[mode] = round(time.perf_counter() - t0, 2)
    times: dict[str, list[float]] = {m: [] for m in modes}
    stages: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    for clip in clips:
        for mode in modes:
            _forget_transcripts()
            t0 = time.perf_counter()
            _, grid, timing_rows, hits, _ = sp.run_search("speech-file", None, str(clip), None, "", gallery.name,
                                                           mode, 12, 100, 90, 8.0)
            times[mode].append((time.perf_counter() - t0) * 1000.0)
            assert len(grid) == len(hits) > 0
            for name, ms in timing_rows[:-1]:
                stages[mode].setdefault(name, []).append(float(ms))
    out = {}
    for mode in modes:
        ms = sorted(times[mode])
        out[mode] = {"p50_ms": round(statistics.median(ms), 1), "mean_ms": round(statistics.fmean(ms), 1),
                     "max_ms": round(ms[-1], 1), "n": len(ms), "first_use_seconds": warm[mode],
                     "stages_p50_ms": {k: round(statistics.median(v), 1) for k, v in stages[mode].items()}}
        log(f"  {mode}: p50 {out[mode]['p50_ms']} ms (first use {warm[mode]} s)")
    return {"gallery": f"default ({len(gallery)} images: Tux Paint + emoji)", "k": 12, "modes": out,
            "measure": "pages.search.run_search in process: decode the file, search, thumbnails, tables; "
                       "ms per query, a new recording each time (transcript cache emptied)"}


def bench_browser(home: Path, clips: list[Path], timeout_s: float = 240.0) -> dict[str, Any]:
    """Click to rendered results in Chromium, cascade mode, one upload per clip."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        return {"skipped": f"playwright not installed ({exc})"}
    from tests.browser_helpers import CHROMIUM, App, launch_chromium

    if not Path(CHROMIUM).is_file():
        return {"skipped": f"{CHROMIUM} missing: install Debian chromium"}
    log(f"browser: starting the app and Chromium ({len(clips)} queries)")
    app = App(home, home / "app.log")
    try:
        startup = app.wait_ready(timeout=180)
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            times = []
            for clip in clips:
                # A fresh page per query, so nothing of the previous results is on screen to match.
                page.goto(app.url, timeout=120_000)  # not "networkidle": the app keeps a connection open
                search_tab = page.get_by_role("tab", name="Search", exact=True).first
                search_tab.wait_for(state="visible", timeout=120_000)
                search_tab.click()
                page.get_by_role("tab", name="Audio file").click()
                page.locator("#search-audio input[type=file]").set_input_files(str(clip))
                page.locator("#search-audio audio, #search-audio [data-testid^='waveform']").first.wait_for(
                    state="attached", timeout=30_000)
                t0 = time.perf_counter()
                page.locator("#search-go").click()
                page.wait_for_function(
                    "() => { const h = document.querySelector('#search-heard');"
                    " const imgs = [...document.querySelectorAll('#search-results img')];"
                    " return h && h.innerText.includes('Total:') && imgs.length > 0"
                    " && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                    timeout=timeout_s * 1000)
                times.append((time.perf_counter() - t0) * 1000.0)
            browser.close()
    finally:
        app.stop()
    first, rest = times[0], sorted(times[1:]) or [times[0]]
    return {"mode": "cascade", "app_startup_s": round(startup, 2), "first_query_ms": round(first, 1),
            "p50_ms": round(statistics.median(rest), 1), "max_ms": round(max(rest), 1), "n": len(rest),
            "measure": "Chromium (Playwright), a fresh page per query: click Search -> the result line "
                       "(transcript, total) shown and every result image loaded; first query (model loads) apart"}


def bench_maps(per_class: int, methods: list[str]) -> dict[str, Any]:
    from pages.explorer import map_figure
    from xmodal_core import analysis
    from xmodal_core.data.features import FeatureCache

    ensure_dataset("fashion-mnist")
    records = analysis.sample("fashion-mnist", ["image"], per_class, max_per_class=None)
    log(f"maps: {len(records)} Fashion-MNIST images; features (once, cached) ...")
    t0 = time.perf_counter()
    FeatureCache("efficientnet-lite0").get(records, "image")
    features_s = time.perf_counter() - t0
    out: dict[str, Any] = {"set": "fashion-mnist", "split": "test", "points": len(records),
                           "model": "pretrained EfficientNet-Lite0 (1280-d)",
                           "feature_extraction_seconds_if_not_cached": round(features_s, 2), "methods": {}}
    if "umap" in methods:  # numba compiles UMAP on first use in a process: a one-off per app start
        import numpy as np

        from xmodal_core.projection import project

        t0 = time.perf_counter()
        project(np.random.default_rng(0).standard_normal((200, 16)).astype("float32"), "umap", cache=False)
        out["umap_first_use_in_process_seconds"] = round(time.perf_counter() - t0, 2)
    for method in methods:
        row = {}
        for attempt in ("first", "cached"):
            t0 = time.perf_counter()
            data = analysis.embedding_map("fashion-mnist", "pretrained", ["image"], method, per_class=per_class)
            map_figure(data, "class", method).to_json()
            row[f"{attempt}_seconds"] = round(time.perf_counter() - t0, 2)
            row[f"{attempt}_projection_cached"] = bool(data.cached)
            row[f"{attempt}_projection_seconds"] = round(data.seconds, 2)
        out["methods"][method] = row
        log(f"  {method}: first {row['first_seconds']} s, cached {row['cached_seconds']} s")
    import torch

    out["torch_threads_after"] = torch.get_num_threads()
    out["measure"] = ("analysis.embedding_map (sample, cached features, projection, thumbnails) + the plotly "
                      "figure as JSON, i.e. the Explorer's Draw button minus the browser")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 queries, ~200-image gallery, 400-point maps, no browser")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None,
                        help="map points per class (default 500; quick 40)")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from xmodal_core import paths

    load_before = os.getloadavg()
    threads = torch.get_num_threads()  # read now: the map libraries' thread pools may change it later
    main_home = paths.home()
    runs = shared_space_runs(args.quick)
    for name in ("tuxpaint", "emoji"):
        ensure_dataset(name)
    from bench.search_latency import human_queries

    n = args.queries or (4 if args.quick else 12)
    clips = [Path(s.audio) for s, _ in human_queries()][:n]
    home = make_app_home(main_home, args.quick)
    os.environ["XMODAL_HOME"] = str(home)
    run_ids = register_runs(runs)
    search = bench_search_page(clips, ["cascade", "asif", "coarse"])
    if args.quick or args.no_browser:
        browser = {"skipped": "quick mode" if args.quick else "--no-browser"}
    else:
        try:
            _forget_transcripts()  # the app process must not find these clips' transcripts on disk
            browser = bench_browser(home, clips[:6])
        except Exception as exc:  # noqa: BLE001 - keep the other numbers; the exit status says it failed
            import traceback

            traceback.print_exc()
            browser = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    maps = bench_maps(args.per_class or (40 if args.quick else 500), ["tsne", "umap"])
    payload = {
        "quick": args.quick,
        "what": "Search page query -> rendered results; Explorer time to first map and from the cache",
        "queries": {"set": "tuxpaint", "split": "test", "what": "spoken descriptions by people", "n": len(clips)},
        "models_in_use": {m: {"run_id": run_ids[m], "run": Path(runs[m]["run_dir"]).name,
                              "source": runs[m]["source"],
                              "trained_on": f"{runs[m]['config']['dataset']} split train"} for m in runs},
        "search_page": search,
        "browser": browser,
        "maps": maps,
        "torch_threads": threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    os.environ["XMODAL_HOME"] = str(main_home)
    if not args.quick:
        keep_gallery_embeddings(home, main_home)
    path = write_result("app_latency_quick" if args.quick else "app_latency", payload)
    log(f"wrote {path}")
    print(json.dumps({k: v for k, v in payload.items() if k in ("search_page",)}, indent=1)[:2000])
    return 1 if "error" in browser else 0


if __name__ == "__main__":
    raise SystemExit(main())
