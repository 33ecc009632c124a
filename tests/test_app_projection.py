"""Projections (t-SNE / UMAP / PCA): right shape and order, computed once and cached on disk."""
from __future__ import annotations

import numpy as np
import pytest

from xmodal_core import projection
from xmodal_core.errors import InputError


def _two_clusters(n=30, d=16, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.05, (n, d)) + np.eye(d)[0]
    b = rng.normal(0, 0.05, (n, d)) + np.eye(d)[1]
    return np.vstack([a, b]).astype(np.float32)


def _pairwise(x):
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def test_pca_equals_sklearn_up_to_sign_and_is_cached(xmodal_home):
    from sklearn.decomposition import PCA

    x = _two_clusters()
    first = projection.project(x, "pca")
    assert first.coords.shape == (60, 2) and first.coords.dtype == np.float32 and not first.cached
    expected = PCA(n_components=2).fit_transform(x)
    np.testing.assert_allclose(_pairwise(first.coords), _pairwise(expected), atol=1e-4)
    again = projection.project(x, "pca")
    assert again.cached and again.seconds == 0.0
    np.testing.assert_array_equal(again.coords, first.coords)
    assert (xmodal_home / "projections" / f"{first.key}.npz").is_file()


def test_cache_key_depends_on_data_method_and_parameters():
    x = _two_clusters()
    base = projection.projection_key(x, "tsne", {"perplexity": 30.0})
    assert projection.projection_key(x.copy(), "tsne", {"perplexity": 30.0}) == base
    assert projection.projection_key(x, "tsne", {"perplexity": 10.0}) != base
    assert projection.projection_key(x, "umap", {"perplexity": 30.0}) != base
    y = x.copy()
    y[0, 0] += 1e-3
    assert projection.projection_key(y, "tsne", {"perplexity": 30.0}) != base


@pytest.mark.slow
def test_tsne_keeps_two_clusters_apart_and_reports_progress(xmodal_home):
    x = _two_clusters(n=25)
    ticks = []
    out = projection.project(x, "tsne", max_iter=300, progress=lambda d, t: ticks.append((d, t)))
    a, b = out.coords[:25], out.coords[25:]
    within = max(_pairwise(a).mean(), _pairwise(b).mean())
    between = np.linalg.norm(a.mean(0) - b.mean(0))
    assert between > 2 * within
    assert ticks[-1] == (projection.PROGRESS_STEPS, projection.PROGRESS_STEPS)
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)


@pytest.mark.slow
def test_umap_keeps_two_clusters_apart(xmodal_home):
    x = _two_clusters(n=25)
    out = projection.project(x, "umap", n_neighbors=10)
    a, b = out.coords[:25], out.coords[25:]
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 2 * max(_pairwise(a).mean(), _pairwise(b).mean())


def test_settings_too_large_for_few_points_are_clamped_with_a_note():
    params, notes = projection.effective_params("tsne", 10, perplexity=30)
    assert params["perplexity"] == pytest.approx(3.0) and "perplexity" in notes[0]
    params, notes = projection.effective_params("umap", 6, n_neighbors=15)
    assert params["n_neighbors"] == 5 and notes


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 4)), "at least 3 points"),
    (np.zeros(5), "matrix"),
    (np.array([[0, 1], [np.nan, 1], [1, 1]], dtype=float), "NaN"),
])
def test_unusable_embeddings_are_refused(bad, match):
    with pytest.raises(InputError, match=match):
        projection.project(bad, "pca")


def test_unknown_method_is_refused():
    with pytest.raises(InputError, match="tsne, umap, pca"):
        projection.project(_two_clusters(), "mds")
