"""recall@k, top-k accuracy, grouped heatmaps, modality gap and the retrieval probes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmodal_core.errors import InputError
from xmodal_core.metrics import (mixture_recall, modality_gap, recall_at_k, retrieval_probe, similarity_heatmap,
                                 topk_accuracy)


def recall_reference(sim: list[list[float]], positives: list[set[int]], k: int) -> float:
    hits = 0
    for row, pos in zip(sim, positives):
        ranked = sorted(range(len(row)), key=lambda j: -row[j])
        hits += any(j in pos for j in ranked[:k])
    return hits / len(sim)


# --- recall@k ------------------------------------------------------------------------------


def test_recall_with_several_positives_per_query_by_hand():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.8, 0.3, 0.2],  # ranking 0, 2, 3, 4, 1
            [0.1, 0.2, 0.3, 0.4, 0.5],  # ranking 4, 3, 2, 1, 0
            [0.5, 0.4, 0.9, 0.1, 0.0],  # ranking 2, 0, 1, 3, 4
        ]
    )
    positives = [{2, 3}, {0}, {1, 4}]  # first hits at ranks 2, 5, 3
    got = recall_at_k(sim, positives, ks=(1, 2, 3, 5))
    assert got == {"R@1": 0.0, "R@2": pytest.approx(1 / 3), "R@3": pytest.approx(2 / 3), "R@5": 1.0}


def test_recall_matches_a_loop_on_random_data():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((25, 40))
    positives = [set(rng.choice(40, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(25)]
    got = recall_at_k(sim, positives, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert got[f"R@{k}"] == pytest.approx(recall_reference(sim.tolist(), positives, k))


def test_recall_accepts_an_index_vector_or_a_mask():
    rng = np.random.default_rng(1)
    sim = torch.from_numpy(rng.standard_normal((6, 9)))
    index = torch.tensor([0, 3, 8, 2, 2, 5])
    mask = torch.zeros(6, 9, dtype=torch.bool)
    mask[torch.arange(6), index] = True
    as_sets = recall_at_k(sim, [{int(i)} for i in index])
    assert recall_at_k(sim, index) == as_sets == recall_at_k(sim, mask)


def test_recall_k_beyond_the_gallery_counts_every_query():
    assert recall_at_k(torch.rand(3, 4), [{0}, {1}, {3}], ks=(10,)) == {"R@10": 1.0}


def test_recall_rejects_queries_without_positives_and_bad_indices():
    with pytest.raises(InputError, match=r"queries \[1\] have no positive"):
        recall_at_k(torch.rand(2, 3), [{0}, set()])
    with pytest.raises(InputError, match="outside 0..2"):
        recall_at_k(torch.rand(2, 3), [{0}, {3}])
    with pytest.raises(InputError, match="one set per query"):
        recall_at_k(torch.rand(2, 3), [{0}])


# --- top-k accuracy ------------------------------------------------------------------------


def test_mixture_oracle_lets_each_query_take_its_own_weight_by_hand():
    # two items; embedding a puts each query's answer first for query 0 only, b for query 1 only
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mix = mixture_recall(queries, a, b, [0, 1], weights=(0.0, 1.0), ks=(1, 2))
    assert mix.recall == [{"R@1": 0.5, "R@2": 1.0}, {"R@1": 0.5, "R@2": 1.0}]
    assert mix.oracle == {"R@1": 1.0, "R@2": 1.0}
    assert mix.best_weight == 0.0  # a tie goes to the smaller weight


def test_mixture_recall_per_weight_is_recall_of_the_mixed_gallery_and_the_oracle_bounds_it():
    g = torch.Generator().manual_seed(3)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    a, b, queries = unit(40, 8), unit(40, 8), unit(25, 8)
    positives = [[i, (i + 7) % 40] for i in range(25)]
    weights = (0.0, 0.25, 0.5, 0.75, 1.0)
    mix = mixture_recall(queries, a, b, positives, weights)
    for w, got in zip(weights, mix.recall):
        gallery = torch.nn.functional.normalize((1 - w) * a + w * b, dim=-1)
        assert got == pytest.approx(recall_at_k(queries @ gallery.T, positives, (1, 5, 10)))
        assert all(mix.oracle[k] >= got[k] for k in got)
    best = max(mix.recall, key=lambda r: r["R@1"])
    assert mix.recall[list(weights).index(mix.best_weight)]["R@1"] == best["R@1"]


def test_mixture_recall_rejects_mismatched_galleries_and_bad_weights():
    a = torch.eye(3)
    with pytest.raises(InputError, match="same"):
        mixture_recall(torch.eye(3), a, torch.eye(4)[:, :3].T, [0, 1, 2])
    with pytest.raises(InputError, match="weights"):
        mixture_recall(torch.eye(3), a, a, [0, 1, 2], weights=(0.5, 1.5))
    with pytest.raises(InputError, match="positive"):
        mixture_recall(torch.eye(3), a, a, torch.zeros(3, 3, dtype=torch.bool))


def test_topk_accuracy_by_hand_and_against_a_loop():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])  # ranks 1, 2, 3
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == {
        "top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "top5": 1.0
    }
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((50, 12)), rng.integers(0, 12, 50)
    got = topk_accuracy(logits, labels, ks=(1, 5))
    for k in (1, 5):
        want = sum(int(l) in sorted(range(12), key=lambda j: -row[j])[:k] for row, l in zip(logits, labels)) / 50
        assert got[f"top{k}"] == pytest.approx(want)


def test_topk_accuracy_rejects_labels_outside_the_classes():
    with pytest.raises(InputError, match="0..2"):
        topk_accuracy(torch.rand(2, 3), torch.tensor([0, 3]))


# --- heatmap -------------------------------------------------------------------------------


def test_heatmap_groups_rows_and_columns_by_class():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    labels_a, labels_b = ["dog", "cat", "dog", "cat"], ["cat", "dog", "bird"]
    hm = similarity_heatmap(a, b, labels_a, labels_b)
    assert hm.classes == ["bird", "cat", "dog"]
    assert hm.row_order.tolist() == [1, 3, 0, 2]  # cats, then dogs; stable within a class
    assert hm.row_labels == ["cat", "cat", "dog", "dog"]
    assert hm.col_order.tolist() == [2, 0, 1] and hm.col_labels == ["bird", "cat", "dog"]
    for i, r in enumerate(hm.row_order):
        for j, c in enumerate(hm.col_order):
            u, v = a[r].tolist(), b[c].tolist()
            cos = (u[0] * v[0] + u[1] * v[1]) / math.hypot(*u) / math.hypot(*v)
            assert hm.matrix[i, j] == pytest.approx(cos, abs=1e-6)


def test_heatmap_classes_choose_order_and_leave_out_the_rest():
    a, b = torch.eye(3), torch.eye(3)
    hm = similarity_heatmap(a, b, ["x", "y", "z"], ["z", "y", "x"], classes=["z", "x"])
    assert hm.row_labels == ["z", "x"] and hm.col_labels == ["z", "x"]
    # row "z" is a[2] = e2, column "z" is b[0] = e0; row "x" = e0, column "x" = b[2] = e2
    assert hm.matrix.shape == (2, 2) and hm.matrix.tolist() == [[0.0, 1.0], [1.0, 0.0]]


# --- modality gap --------------------------------------------------------------------------


def test_modality_gap_is_the_distance_between_normalised_means():
    assert modality_gap(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0]])) == pytest.approx(math.sqrt(2))
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    mean_b = [(1 / math.sqrt(2) + 1) / 2, (1 / math.sqrt(2)) / 2]
    assert modality_gap(a, b) == pytest.approx(math.hypot(0.5 - mean_b[0], 0.5 - mean_b[1]))
    assert modality_gap(a, a * 3) == pytest.approx(0.0, abs=1e-7)


# --- retrieval probe -----------------------------------------------------------------------


def test_probe_on_one_shared_space_is_perfect_for_both_protocols():
    a = torch.randn(1000, 16, generator=torch.Generator().manual_seed(3))
    res = retrieval_probe(a, a.clone(), trials=5)
    assert (res.n_anchors, res.n_queries, res.k, res.p) == (900, 100, 90, 8.0)
    assert res.direct_mean == 1.0 and res.asif_mean == 1.0 and res.asif_std == 0.0


def test_probe_asif_aligns_spaces_that_direct_cosine_cannot():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(400, 12, generator=g)
    rotation = torch.linalg.qr(torch.randn(12, 12, generator=g))[0]
    b = a @ rotation + 0.05 * torch.randn(400, 12, generator=g)  # same geometry, other axes
    res = retrieval_probe(a, b, trials=10, seed=0)
    assert res.asif_mean > 0.9 and res.direct_mean < 0.3
    assert res.chance == pytest.approx(1 / res.n_queries)


def test_probe_scales_down_for_small_sets_as_documented_and_is_seeded():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 6, generator=g)
    res = retrieval_probe(a, b, trials=4, seed=7)
    assert (res.n_queries, res.n_anchors, res.k) == (20, 180, 18)
    assert res.direct_mean is None and res.direct_trials is None  # different widths: no shared space
    again = retrieval_probe(a, b, trials=4, seed=7)
    assert again.asif_trials.tolist() == res.asif_trials.tolist()
    assert len(res.asif_trials) == 4 and res.asif_std == pytest.approx(np.std(res.asif_trials, ddof=1))


def test_probe_rejects_unpaired_inputs():
    with pytest.raises(InputError, match="paired row by row"):
        retrieval_probe(torch.randn(10, 3), torch.randn(9, 3))


# --- ranked lists and positives --------------------------------------------------------------


def test_recall_of_ranking_counts_a_short_list_as_all_there_is():
    from xmodal_core.metrics import recall_of_ranking

    positives = torch.tensor([[False, False, True, False], [True, False, False, False], [False, True, False, False]])
    ranked = torch.tensor([[3, 2], [1, 3], [1, 1]])  # query 1's positive (0) is not in its list
    r = recall_of_ranking(ranked, positives, ks=(1, 2, 10))
    assert r == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@10": pytest.approx(2 / 3)}


def test_recall_of_ranking_matches_reading_each_list_by_hand():
    from xmodal_core.metrics import recall_of_ranking

    gen = torch.Generator().manual_seed(3)
    positives = torch.rand(40, 12, generator=gen) < 0.15
    ranked = torch.stack([torch.randperm(12, generator=gen)[:7] for _ in range(40)])
    ks = (1, 3, 5, 20)
    expected = {f"R@{k}": sum(any(bool(positives[q, j]) for j in ranked[q, :k]) for q in range(40)) / 40 for k in ks}
    assert recall_of_ranking(ranked, positives, ks) == pytest.approx(expected)


def test_group_positives_match_a_brute_force_over_groups_and_own_entries():
    from xmodal_core.metrics import group_positives

    queries = ["dog", "cat", "dog", "owl", "cat"]
    entries = [{"dog"}, {"cat", "lion"}, "owl", {"bird"}]
    own = [0, 1, 0, 3, 2]
    got = group_positives(queries, entries, own=own)
    sets = [e if isinstance(e, set) else {e} for e in entries]
    expected = torch.tensor([[q in s or j == o for j, s in enumerate(sets)] for q, o in zip(queries, own)])
    assert torch.equal(got, expected)
    assert got[3].tolist() == [False, False, True, True]  # its group, and its own entry though "bird"
