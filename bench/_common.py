"""Shared helpers for benchmarks: machine description, timing, atomic JSON results.

Every benchmark writes `bench/results/NAME.json` through `write_result`, which adds the
name, the date and `machine_info()`, so a number is never read without its context.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from xmodal_core.fsio import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["RESULTS_DIR", "machine_info", "timeit", "timeit_interleaved", "write_result"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, library versions, GPU if any."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "git_commit": _git_commit(),
    }
    try:  # other work on the machine skews timings: record how busy it was
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules or _importable("torch"):
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if "faiss" in sys.modules:
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
    info["numpy"] = sys.modules["numpy"].__version__ if "numpy" in sys.modules else None
    return info


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in seconds)

    def pct(q: float) -> float:  # nearest-rank percentile
        return ms[min(len(ms) - 1, max(0, round(q * len(ms)) - 1))]

    return {
        "n": len(ms),
        "mean_ms": statistics.fmean(ms),
        "std_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
        "min_ms": ms[0],
        "p50_ms": statistics.median(ms),
        "p95_ms": pct(0.95),
        "max_ms": ms[-1],
    }


def timeit(fn: Callable[[], Any], repeat: int = 20, warmup: int = 3) -> dict[str, float]:
    """Wall-clock `fn()` `repeat` times after `warmup` untimed calls.

    Returns: {"n", "mean_ms", "std_ms", "min_ms", "p50_ms", "p95_ms", "max_ms"}. For CUDA work,
    `fn` must synchronise itself (e.g. end with `torch.cuda.synchronize()`).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _stats(times)


def timeit_interleaved(
    fns: Mapping[str, Callable[[], Any]], repeat: int = 20, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Time several functions round-robin (A, B, A, B, ...) so drifting machine load hits all alike.

    Returns: name -> the same stats as `timeit`.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: _stats(t) for name, t in times.items()}


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second: the date every result carries."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def stamp() -> dict[str, Any]:
    """{"date", "git_commit"} of a measurement, for rows that results files collect across runs."""
    return {"date": utc_now(), "git_commit": _git_commit()}


def write_result(name: str, payload: Mapping[str, Any]) -> Path:
    """Write `{"name", "date", "machine", **payload}` to bench/results/NAME.json atomically.

    `payload` must be JSON-serialisable and must not use the keys name/date/machine.
    Returns the path written.
    """
    clash = {"name", "date", "machine"} & set(payload)
    if clash:
        raise ValueError(f"payload keys {sorted(clash)} are reserved by write_result")
    doc = {
        "name": name,
        "date": utc_now(),
        "machine": machine_info(),
        **payload,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    atomic_write_json(path, doc)
    return path
