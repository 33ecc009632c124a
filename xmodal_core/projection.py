"""2-D (or 3-D) maps of embeddings — t-SNE, UMAP or PCA — computed once and cached on disk.

The cache key is a hash of the embedding matrix (shape, dtype and bytes), the method and
its effective parameters, so asking again for the same map returns it from
`paths.home()/projections/` in milliseconds, across restarts and processes.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from xmodal_core import paths
from xmodal_core.errors import InputError
from xmodal_core.fsio import atomic_path

METHODS = ("tsne", "umap", "pca")
METHOD_LABELS = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
MAX_POINTS = 20_000  # t-SNE / UMAP past this take many minutes on a CPU; subsample first
CACHE_VERSION = 1
PROGRESS_STEPS = 4  # progress(done, PROGRESS_STEPS): checked, prepared, fitted, saved

# A progress callback: progress(done, total).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Projection:
    """A computed map.

    Attributes:
        coords: (N, n_components) float32, one row per input row, same order.
        method: "tsne" | "umap" | "pca".
        params: the effective parameters (after clamping to what N allows).
        key: the cache key (hex).
        cached: True when it came from the disk cache.
        seconds: time spent computing (0 for a cache hit).
        notes: sentences a person should read (e.g. a clamped perplexity).
    """

    coords: np.ndarray
    method: str
    params: dict[str, Any]
    key: str
    cached: bool
    seconds: float
    notes: tuple[str, ...] = field(default=())


def projections_dir() -> Path:
    path = paths.home() / "projections"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check(embeddings: Any) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"embeddings must be an (N, d) matrix; got shape {x.shape}")
    if x.shape[0] < 3:
        raise InputError(f"a map needs at least 3 points; got {x.shape[0]}: pick more items or another set")
    if x.shape[0] > MAX_POINTS:
        raise InputError(f"{x.shape[0]} points is more than {MAX_POINTS} for a map; subsample first")
    if not np.isfinite(x).all():
        raise InputError("embeddings contain NaN or infinite values; re-encode the items")
    return np.ascontiguousarray(x)


def effective_params(method: str, n: int, *, n_components: int = 2, seed: int = 0, perplexity: float = 30.0,
                     n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
                     max_iter: int = 1000) -> tuple[dict[str, Any], list[str]]:
    """The parameters a method will really use for N points, and notes on anything clamped."""
    if method not in METHODS:
        raise InputError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
    if n_components not in (2, 3):
        raise InputError(f"n_components must be 2 or 3, not {n_components}")
    if metric not in ("cosine", "euclidean"):
        raise InputError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
    notes: list[str] = []
    params: dict[str, Any] = {"n_components": int(n_components), "seed": int(seed)}
    if method == "tsne":
        if perplexity <= 0:
            raise InputError(f"perplexity must be positive, not {perplexity}")
        # sklearn needs perplexity < N; a perplexity near N/3 is already very smooth.
        limit = max(1.0, (n - 1) / 3.0)
        if perplexity > limit:
            notes.append(f"perplexity {perplexity:g} is too large for {n} points; using {limit:.1f}")
            perplexity = limit
        if max_iter < 250:
            raise InputError(f"t-SNE needs at least 250 iterations, not {max_iter}")
        params.update(perplexity=float(perplexity), metric=metric, max_iter=int(max_iter))
    elif method == "umap":
        if n_neighbors < 2:
            raise InputError(f"n_neighbors must be at least 2, not {n_neighbors}")
        if n_neighbors > n - 1:
            notes.append(f"n_neighbors {n_neighbors} is too large for {n} points; using {n - 1}")
            n_neighbors = n - 1
        if not 0.0 <= min_dist <= 1.0:
            raise InputError(f"min_dist must be in [0, 1], not {min_dist}")
        params.update(n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric=metric)
    return params, notes


def projection_key(embeddings: np.ndarray, method: str, params: dict[str, Any]) -> str:
    """Hex sha256 of the matrix (shape, dtype, bytes) + method + parameters."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": CACHE_VERSION, "shape": x.shape, "method": method, "params": params},
                             sort_keys=True).encode())
    digest.update(x.tobytes())
    return digest.hexdigest()


def _fit(x: np.ndarray, method: str, params: dict[str, Any]) -> np.ndarray:
    n_components, seed = params["n_components"], params["seed"]
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(n_components, x.shape[0], x.shape[1])
        coords = PCA(n_components=k, random_state=seed).fit_transform(x)
        if k < n_components:  # fewer dimensions than asked (tiny input): pad with zeros
            coords = np.hstack([coords, np.zeros((x.shape[0], n_components - k))])
        return coords
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=n_components, perplexity=params["perplexity"], metric=params["metric"],
                    max_iter=params["max_iter"], init="pca", random_state=seed).fit_transform(x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": determinism is wanted
        import umap

        # Spectral init needs a connected enough graph; tiny sets get a random start instead.
        init = "spectral" if x.shape[0] > 2 * params["n_neighbors"] + 2 else "random"
        return umap.UMAP(n_components=n_components, n_neighbors=params["n_neighbors"], min_dist=params["min_dist"],
                         metric=params["metric"], random_state=seed, init=init).fit_transform(x)


_key_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _key_locks.setdefault(key, threading.Lock())


def _save(path: Path, coords: np.ndarray, meta: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, coords=coords, meta=np.array(json.dumps(meta)))


def _load(path: Path, n: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            coords = z["coords"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache file is recomputed
    return coords if coords.shape[0] == n else None


def project(embeddings: Any, method: str = "tsne", *, n_components: int = 2, seed: int = 0,
            perplexity: float = 30.0, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
            max_iter: int = 1000, cache: bool = True, progress: Progress | None = None) -> Projection:
    """Project (N, d) embeddings to (N, n_components) with t-SNE, UMAP or PCA, cached.

    Args:
        embeddings: (N, d) float array, 3 <= N <= MAX_POINTS.
        method: "tsne" | "umap" | "pca".
        perplexity, max_iter: t-SNE (perplexity is clamped to (N-1)/3).
        n_neighbors, min_dist: UMAP (n_neighbors is clamped to N-1).
        metric: "cosine" (default; the embeddings are compared by cosine) or "euclidean"
            (t-SNE and UMAP; PCA is linear).
        cache: read and write `projections_dir()`.
        progress: callable(done, total), called at each of a few stages.

    Returns:
        `Projection` with float32 coordinates in input order.
    """
    x = _check(embeddings)
    params, notes = effective_params(method, x.shape[0], n_components=n_components, seed=seed,
                                     perplexity=perplexity, n_neighbors=n_neighbors, min_dist=min_dist,
                                     metric=metric, max_iter=max_iter)
    key = projection_key(x, method, params)
    tick = progress or (lambda done, total: None)
    tick(1, PROGRESS_STEPS)
    path = projections_dir() / f"{key}.npz"
    with _lock_for(key):  # two people asking for the same map compute it once
        if cache and path.is_file():
            coords = _load(path, x.shape[0])
            if coords is not None:
                tick(PROGRESS_STEPS, PROGRESS_STEPS)
                return Projection(coords.astype(np.float32), method, params, key, True, 0.0, tuple(notes))
        tick(2, PROGRESS_STEPS)
        start = time.perf_counter()
        coords = np.asarray(_fit(x, method, params), dtype=np.float32)
        seconds = time.perf_counter() - start
        tick(3, PROGRESS_STEPS)
        if cache:
            _save(path, coords, {"method": method, "params": params, "n": int(x.shape[0]),
                                 "dim": int(x.shape[1]), "seconds": round(seconds, 3)})
        tick(PROGRESS_STEPS, PROGRESS_STEPS)
    return Projection(coords, method, params, key, False, seconds, tuple(notes))
