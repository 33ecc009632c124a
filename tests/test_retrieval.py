"""VectorIndex against brute force, its edges and persistence; coarse-to-fine; ASIF against a loop."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from xmodal_core.errors import InputError
from xmodal_core.metrics import recall_at_k
from xmodal_core.retrieval import VectorIndex, asif_similarity, coarse_to_fine, relative_representation

KINDS = ["flat", "ivf", "hnsw"]


def vectors(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def brute_force(items: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k by numpy: (scores, row indices)."""
    it = items / np.linalg.norm(items, axis=1, keepdims=True)
    qu = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sim = qu @ it.T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, order, axis=1), order


def small_index(kind: str, n: int = 300, d: int = 8, seed: int = 0) -> tuple[VectorIndex, list[str], np.ndarray]:
    # ivf trains at 200 vectors here, so the small index is a real IVF one.
    index = VectorIndex(d, kind, ivf_min_train=200, nprobe=1000)
    ids = [f"item-{i}" for i in range(n)]
    x = vectors(n, d, seed)
    index.add(ids, x)
    return index, ids, x


# --- flat is exact -------------------------------------------------------------------------


def test_flat_search_equals_brute_force():
    index, ids, x = small_index("flat")
    queries = vectors(6, 8, 1)
    scores, found = index.search(torch.from_numpy(queries), k=7)
    want_scores, want_rows = brute_force(x, queries, 7)
    assert found.tolist() == [[ids[r] for r in row] for row in want_rows]
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_vectors_are_normalised_inside(kind):
    index, ids, x = small_index(kind)
    q = x[:3]
    s1, i1 = index.search(q, 5)
    s2, i2 = index.search(q * 7.5, 5)
    assert i1.tolist() == i2.tolist()
    np.testing.assert_allclose(s1[:, 0], 1.0, atol=1e-5)  # each vector finds itself at cosine 1
    assert i1[:, 0].tolist() == ids[:3]


def test_single_vector_query_gives_one_row():
    index, ids, x = small_index("flat")
    scores, found = index.search(x[5], 3)
    assert scores.shape == (1, 3) and found[0, 0] == ids[5]


def test_ivf_searches_exactly_until_it_has_enough_vectors_to_train():
    index = VectorIndex(8, "ivf", ivf_min_train=500)
    x = vectors(300, 8, 2)
    index.add([str(i) for i in range(300)], x)
    assert index.nlist is None  # not trained: exact
    _, found = index.search(x[:4], 5)
    _, rows = brute_force(x, x[:4], 5)
    assert found.tolist() == [[str(r) for r in row] for row in rows]
    index.add([str(i) for i in range(300, 600)], vectors(300, 8, 3))
    assert index.nlist == max(1, min(round(4 * math.sqrt(600)), 600 // 39))


def test_an_untrained_ivf_survives_save_and_load_and_trains_later(tmp_path):
    index = VectorIndex(8, "ivf", ivf_min_train=400, nprobe=1000)
    index.add([str(i) for i in range(300)], vectors(300, 8, 4))
    loaded = VectorIndex.load(index.save(tmp_path / "ivf.index"))
    assert loaded.nlist is None and len(loaded) == 300
    loaded.add([str(i) for i in range(300, 500)], vectors(200, 8, 5))
    assert loaded.nlist is not None and len(loaded) == 500
    x = np.concatenate([vectors(300, 8, 4), vectors(200, 8, 5)])
    _, found = loaded.search(x[[0, 299, 300, 499]], 1)
    assert found[:, 0].tolist() == ["0", "299", "300", "499"]


# --- edges ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_the_index_is_clipped(kind):
    index = VectorIndex(4, kind)
    index.add(["a", "b", "c"], vectors(3, 4, 4))
    scores, found = index.search(vectors(2, 4, 5), k=10)
    assert scores.shape == (2, 3) and sorted(found[0].tolist()) == ["a", "b", "c"]


def test_wrong_dim_is_rejected_on_add_and_search():
    index = VectorIndex(8)
    with pytest.raises(InputError, match="dim 5.*dim 8"):
        index.add(["a"], vectors(1, 5, 0))
    index.add(["a"], vectors(1, 8, 0))
    with pytest.raises(InputError, match="dim 3.*dim 8"):
        index.search(vectors(1, 3, 0), 1)


def test_nan_and_zero_vectors_are_rejected_naming_the_rows():
    index = VectorIndex(4)
    x = vectors(3, 4, 0)
    x[1, 2] = np.nan
    with pytest.raises(InputError, match="rows 1 contain NaN"):
        index.add(["a", "b", "c"], x)
    with pytest.raises(InputError, match="all zeros"):
        index.add(["a", "b"], np.zeros((2, 4), np.float32))
    assert len(index) == 0  # nothing half-added


def test_duplicate_ids_are_rejected_within_an_add_and_against_the_index():
    index = VectorIndex(4)
    with pytest.raises(InputError, match="duplicate ids.*'a'"):
        index.add(["a", "b", "a"], vectors(3, 4, 0))
    index.add(["a"], vectors(1, 4, 0))
    with pytest.raises(InputError, match="already in the index: 'a'"):
        index.add(["b", "a"], vectors(2, 4, 1))
    with pytest.raises(InputError, match="one id per row"):
        index.add(["x", "y"], vectors(3, 4, 1))


def test_searching_an_empty_index_says_so():
    with pytest.raises(InputError, match="empty"):
        VectorIndex(4, "hnsw").search(vectors(1, 4, 0), 1)


def test_unknown_kind_is_rejected():
    with pytest.raises(InputError, match="flat, ivf, hnsw"):
        VectorIndex(4, "annoy")


# --- remove, save, load --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_removed_ids_are_never_returned(kind):
    index, ids, x = small_index(kind)
    gone = ids[:20]  # under a quarter: hnsw hides them without a rebuild
    assert index.remove(gone) == 20
    assert len(index) == 280 and "item-0" not in index
    _, found = index.search(x[:20], 10)
    assert not set(found.ravel().tolist()) & set(gone)
    with pytest.raises(InputError, match="not in the index"):
        index.remove(["item-0"])
    assert index.remove(["item-0", "item-25"], missing_ok=True) == 1


def test_hnsw_rebuilds_its_graph_when_many_are_removed():
    index, ids, x = small_index("hnsw")
    index.remove(ids[:200])
    assert index._index.ntotal == 100  # rebuilt from the live vectors
    _, found = index.search(x[200:205], 1)
    assert found[:, 0].tolist() == ids[200:205]


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_after_remove(kind, tmp_path):
    index, ids, x = small_index(kind)
    index.remove(ids[10:30])
    queries = vectors(5, 8, 9)
    before = index.search(queries, 8)
    path = index.save(tmp_path / "sub" / "gallery.index")
    assert not list(path.parent.glob("*.tmp"))
    loaded = VectorIndex.load(path)
    after = loaded.search(queries, 8)
    assert after[1].tolist() == before[1].tolist()
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    assert len(loaded) == len(index) == 280 and loaded.kind == kind and loaded.ids() == index.ids()
    assert (loaded.nprobe, loaded.ef_search) == (index.nprobe, index.ef_search)
    # labels continue after a load: a removed id can come back, new ids do not collide
    loaded.add(["item-10", "new"], x[:2])
    _, found = loaded.search(x[:2], 1)
    assert set(found[:, 0].tolist()) <= {"item-0", "item-1", "item-10", "new"}


def test_load_rejects_files_that_are_not_an_index(tmp_path):
    bad = tmp_path / "x.index"
    bad.write_text("hello")
    with pytest.raises(InputError, match="not a saved VectorIndex"):
        VectorIndex.load(bad)
    with pytest.raises(InputError, match="no index file"):
        VectorIndex.load(tmp_path / "missing.index")


@pytest.mark.slow
def test_ivf_and_hnsw_reach_recall_at_10_of_095_on_100k_cross_modal_vectors():
    from bench.index import cross_modal_data

    t0 = time.perf_counter()
    items, queries = cross_modal_data(100_000, 200, dim=64, seed=1)
    ids = [str(i) for i in range(len(items))]
    flat = VectorIndex(64, "flat")
    flat.add(ids, items)
    _, truth = flat.search(queries, 10)
    for kind in ("ivf", "hnsw"):
        index = VectorIndex(64, kind)  # defaults as documented
        index.add(ids, items)
        _, found = index.search(queries, 10)
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])
        assert recall >= 0.95, f"{kind}: recall@10 {recall:.3f} ({index!r})"
    assert time.perf_counter() - t0 < 120  # the budget is ~60 s on 2 busy cores


# --- coarse to fine ------------------------------------------------------------------------


def test_coarse_to_fine_reranks_the_coarse_candidates_by_the_fine_score():
    index, ids, x = small_index("flat", n=200)
    query = x[0] + 0.1
    coarse_scores, coarse_ids = index.search(query, 50)
    fine_of = {i: float(len(i) * 7 % 11) + int(i.split("-")[1]) / 1000 for i in ids}  # unrelated to coarse

    seen = {}

    def fine_scorer(q, candidate_ids):
        seen["ids"] = list(candidate_ids)
        return torch.tensor([fine_of[c] for c in candidate_ids])

    result = coarse_to_fine(query, index, fine_scorer, k_coarse=50, k=5)
    assert seen["ids"] == coarse_ids[0].tolist()  # only the coarse top-50 were rescored
    want = sorted(seen["ids"], key=lambda c: -fine_of[c])[:5]
    assert result.ids == want
    np.testing.assert_allclose(result.fine_scores, [fine_of[c] for c in want], rtol=1e-6)
    coarse_of = dict(zip(coarse_ids[0].tolist(), coarse_scores[0].tolist()))
    np.testing.assert_allclose(result.coarse_scores, [coarse_of[c] for c in want], rtol=1e-6)


def test_coarse_to_fine_passes_a_non_vector_query_to_the_fine_scorer():
    index, ids, x = small_index("flat", n=50)
    tokens = {"tokens": "anything the fine scorer needs"}
    result = coarse_to_fine(
        tokens, index, lambda q, c: [1.0 if q is tokens else 0.0] * len(c), k_coarse=10, k=3, query_vector=x[3]
    )
    assert len(result.ids) == 3 and result.fine_scores.tolist() == [1.0] * 3
    assert result.ids[0] == ids[3]  # all fine scores tie: coarse order is kept


def test_coarse_to_fine_checks_the_fine_scorer_output():
    index, _, x = small_index("flat", n=20)
    with pytest.raises(InputError, match="returned 2 scores for 10"):
        coarse_to_fine(x[0], index, lambda q, c: [0.0, 1.0], k_coarse=10, k=3)


# --- ASIF ----------------------------------------------------------------------------------


def asif_reference(queries, query_anchors, items, item_anchors, k, p):
    """Per-query loops: cosine to each anchor, keep the top k, clamp at 0, ^p, normalise, dot."""

    def rel(v, anchors):
        cos = [sum(a * b for a, b in zip(v, w)) / math.sqrt(sum(a * a for a in v) * sum(b * b for b in w))
               for w in anchors]
        keep = sorted(range(len(cos)), key=lambda m: -cos[m])[:k]
        r = [max(cos[m], 0.0) ** p if m in keep else 0.0 for m in range(len(cos))]
        norm = math.sqrt(sum(x * x for x in r))
        return [x / norm for x in r] if norm > 0 else r

    qa, ia = query_anchors.tolist(), item_anchors.tolist()
    rel_items = [rel(v, ia) for v in items.tolist()]
    out = []
    for v in queries.tolist():
        rq = rel(v, qa)
        out.append([sum(a * b for a, b in zip(rq, ri)) for ri in rel_items])
    return out


def test_asif_matches_a_per_query_loop():
    g = torch.Generator().manual_seed(0)
    queries, query_anchors = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    items, item_anchors = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(9, 3, generator=g, dtype=torch.float64)
    got = asif_similarity(queries, query_anchors, items, item_anchors, k=4, p=3)
    want = asif_reference(queries, query_anchors, items, item_anchors, k=4, p=3)
    assert got.shape == (4, 6)
    np.testing.assert_allclose(got.numpy(), np.array(want), atol=1e-12)


def test_relative_representation_keeps_k_non_negative_entries_and_unit_norm():
    g = torch.Generator().manual_seed(1)
    rel = relative_representation(torch.randn(10, 6, generator=g), torch.randn(30, 6, generator=g), k=5, p=8)
    assert ((rel > 0).sum(dim=1) <= 5).all() and (rel >= 0).all()
    nonzero = rel.norm(dim=1) > 0
    torch.testing.assert_close(rel.norm(dim=1)[nonzero], torch.ones(int(nonzero.sum())))


def test_asif_with_anchors_that_are_the_queries_pairs_retrieves_them_at_r1():
    g = torch.Generator().manual_seed(2)
    n = 40
    speech = torch.randn(n, 16, generator=g)  # two unrelated spaces of different widths
    image = torch.randn(n, 24, generator=g)
    anchors_speech = torch.cat([speech, torch.randn(100, 16, generator=g)])
    anchors_image = torch.cat([image, torch.randn(100, 24, generator=g)])
    sim = asif_similarity(speech, anchors_speech, image, anchors_image, k=10, p=8)
    assert recall_at_k(sim, torch.arange(n), ks=(1,))["R@1"] == 1.0


def test_asif_rejects_unpaired_anchors():
    with pytest.raises(InputError, match="paired row by row"):
        asif_similarity(torch.randn(2, 3), torch.randn(5, 3), torch.randn(2, 4), torch.randn(6, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_asif_and_index_accept_cuda_tensors():
    g = torch.Generator().manual_seed(3)
    q, qa, it, ia = (torch.randn(s, generator=g) for s in [(3, 4), (20, 4), (5, 6), (20, 6)])
    cpu = asif_similarity(q, qa, it, ia, k=5)
    gpu = asif_similarity(q.cuda(), qa.cuda(), it.cuda(), ia.cuda(), k=5)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-4)
    index = VectorIndex(4)
    index.add(["a", "b"], qa[:2].cuda())
    assert index.search(qa[:1].cuda(), 1)[1][0, 0] == "a"
