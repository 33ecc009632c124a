"""Alignment metrics: recall@k, top-k accuracy, grouped similarity heatmaps, modality gap, retrieval probes.

All functions take torch tensors (numpy arrays are accepted too) and return plain Python
numbers or small dataclasses of numpy arrays, ready for JSON, the store or a plot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmodal_core.errors import InputError

__all__ = [
    "recall_at_k",
    "recall_of_ranking",
    "group_positives",
    "MixtureRecall",
    "mixture_recall",
    "topk_accuracy",
    "Heatmap",
    "similarity_heatmap",
    "modality_gap",
    "ProbeResult",
    "retrieval_probe",
]


def _tensor(x, what: str, dims: int) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != dims:
        raise InputError(f"{what} must have {dims} dimensions; got shape {tuple(t.shape)}")
    return t.detach()


def _positive_mask(positives, q: int, n: int, device: torch.device) -> Tensor:
    """(Q, N) bool from a bool matrix, a (Q,) index vector or Q iterables of indices."""
    if isinstance(positives, (Tensor, np.ndarray)):
        t = torch.as_tensor(positives, device=device)
        if t.dim() == 2:
            if tuple(t.shape) != (q, n):
                raise InputError(f"a positives mask must be ({q}, {n}) like sim; got {tuple(t.shape)}")
            return t.bool()
        if t.dim() == 1 and not t.dtype.is_floating_point and t.dtype != torch.bool:
            positives = [[int(i)] for i in t.tolist()]
        else:
            raise InputError("positives: a (Q, N) bool mask, a (Q,) index vector, or Q sets of indices")
    positives = list(positives)
    if len(positives) != q:
        raise InputError(f"positives has {len(positives)} entries for {q} queries; give one set per query")
    rows, cols = [], []
    for i, pos in enumerate(positives):
        items = [int(pos)] if isinstance(pos, (int, np.integer)) else [int(j) for j in pos]
        bad = [j for j in items if not 0 <= j < n]
        if bad:
            raise InputError(f"query {i}: positive indices {bad[:5]} are outside 0..{n - 1}")
        rows += [i] * len(items)
        cols += items
    mask = torch.zeros((q, n), dtype=torch.bool, device=device)
    if rows:
        mask[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
    return mask


def recall_at_k(sim, positives, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Fraction of queries with at least one correct item among their top k.

    Args:
        sim: (Q, N) similarities, higher is better (tensor or numpy).
        positives: the correct items of each query: Q iterables of indices into N (several
            captions per image, several images per caption), or a (Q,) index vector (one each),
            or a (Q, N) bool mask. Every query needs at least one.
        ks: cutoffs; a k above N counts as N.

    Returns:
        {"R@k": fraction in [0, 1]} for each k. Ties in sim are broken in topk's order.
    """
    sim = _tensor(sim, "sim", 2)
    q, n = sim.shape
    if q == 0 or n == 0:
        raise InputError(f"sim must be non-empty; got shape {(q, n)}")
    if any(int(k) < 1 for k in ks):
        raise InputError(f"ks must be positive; got {list(ks)}")
    mask = _positive_mask(positives, q, n, sim.device)
    empty = torch.nonzero(~mask.any(dim=1)).flatten().tolist()
    if empty:
        raise InputError(f"queries {empty[:5]} have no positive item; drop them or fix the pairs")
    kmax = min(max(int(k) for k in ks), n)
    if sim.dtype not in (torch.float32, torch.float64):
        sim = sim.float()
    return recall_of_ranking(sim.topk(kmax, dim=1).indices, mask, ks)


def recall_of_ranking(ranked, positives: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k of ranked lists: `ranked` (Q, K) gallery indices, best first (e.g. a reranker's
    output); `positives` (Q, G) bool. A k above K counts as K (the list is all there is).

    Returns:
        {"R@k": fraction of queries with a positive among their first min(k, K) entries}.
    """
    ranked = _tensor(ranked, "ranked", 2).long()
    if ranked.shape[1] == 0:
        raise InputError("ranked lists must hold at least one entry")
    hit = positives.to(ranked.device).gather(1, ranked).cumsum(dim=1) > 0  # any positive within the first r+1
    width = ranked.shape[1]
    return {f"R@{k}": float(hit[:, min(int(k), width) - 1].float().mean()) for k in ks}


def group_positives(query_groups: Sequence[Hashable], entry_groups: Sequence[Hashable | Iterable[Hashable]],
                    own: Sequence[int] | Tensor | None = None) -> Tensor:
    """Which gallery entries answer which query: (Q, G) bool.

    Args:
        query_groups: the item (group) each query shows.
        entry_groups: per gallery entry, the item it shows, or a set of items (an image several
            records of different items share).
        own: optional (Q,) index of each query's own entry, a positive whatever its groups.

    Returns:
        positives[i, j] = query i's group is among entry j's groups, or j == own[i].
    """
    by_group: dict[Hashable, list[int]] = {}
    for j, gs in enumerate(entry_groups):
        for g in (gs if isinstance(gs, (set, frozenset, list, tuple)) else (gs,)):
            by_group.setdefault(g, []).append(j)
    mask = torch.zeros(len(query_groups), len(entry_groups), dtype=torch.bool)
    for i, g in enumerate(query_groups):
        mask[i, by_group.get(g, [])] = True
    if own is not None:
        own = torch.as_tensor(own, dtype=torch.long)
        mask[torch.arange(len(own)), own] = True
    return mask


def _first_positive_rank(sim: Tensor, mask: Tensor) -> Tensor:
    """(Q,) 0-based rank of each query's best-scoring positive: items scoring strictly higher."""
    best = torch.where(mask, sim, torch.full_like(sim, -torch.inf)).max(dim=1).values
    return (sim > best[:, None]).sum(dim=1)


@dataclass
class MixtureRecall:
    """Retrieval against galleries mixed from two embeddings of the same items (`mixture_recall`).

    weights: the mixing weights w tried; recall: per w, {"R@k": ..}; best_weight: the w with the
    highest R@1 (ties: higher R@k for the largest k, then the smaller w); oracle: {"R@k": ..} when
    every query may take its own w, chosen knowing the answer: an upper bound for any way of
    mixing the two that gives one score per item, since no fixed or per-query rule can do better
    than the best w for that query.
    """

    weights: list[float]
    recall: list[dict[str, float]]
    best_weight: float
    oracle: dict[str, float]


def mixture_recall(queries, a, b, positives, weights: Sequence[float] = tuple(np.linspace(0, 1, 21)),
                   ks: Sequence[int] = (1, 5, 10)) -> MixtureRecall:
    """Recall@k of `queries` against normalize((1 - w) * a + w * b) for each w in `weights`.

    Args:
        queries: (Q, d) unit rows; a, b: (N, d) unit rows, two embeddings of the same N gallery
            items (e.g. an image head's output and a classifier-based prior).
        positives: as in `recall_at_k`.
        weights: each in [0, 1]; ks: cutoffs (a k above N counts as N).

    Returns:
        MixtureRecall: recall per weight, the best fixed weight by R@1, and the per-query oracle.
        Ranks count the items scoring strictly higher than a query's best positive.
    """
    queries, a, b = (_tensor(x, name, 2).float() for x, name in ((queries, "queries"), (a, "a"), (b, "b")))
    if a.shape != b.shape or queries.shape[1] != a.shape[1]:
        raise InputError(f"a and b must be the same (N, d) as each other, with queries' d; got queries "
                         f"{tuple(queries.shape)}, a {tuple(a.shape)}, b {tuple(b.shape)}")
    weights = [float(w) for w in weights]
    if not weights or any(not 0.0 <= w <= 1.0 for w in weights):
        raise InputError(f"weights must be a non-empty list of numbers in [0, 1]; got {weights}")
    if not ks or any(int(k) < 1 for k in ks):
        raise InputError(f"ks must be positive; got {list(ks)}")
    q, n = queries.shape[0], a.shape[0]
    mask = _positive_mask(positives, q, n, queries.device)
    if not mask.any(dim=1).all():
        raise InputError("every query needs a positive item; drop the others or fix the pairs")
    ranks = torch.stack([_first_positive_rank(queries @ F.normalize((1 - w) * a + w * b, dim=-1).T, mask)
                         for w in weights])  # (W, Q)

    def recall(r: Tensor) -> dict[str, float]:
        return {f"R@{k}": float((r < min(int(k), n)).float().mean()) for k in ks}

    per_weight = [recall(r) for r in ranks]
    kmax = f"R@{max(int(k) for k in ks)}"
    best = max(range(len(weights)), key=lambda i: (per_weight[i].get("R@1", 0.0), per_weight[i][kmax], -weights[i]))
    return MixtureRecall(weights, per_weight, weights[best], recall(ranks.min(dim=0).values))


def topk_accuracy(logits, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the k highest logits.

    Args:
        logits: (N, C); labels: (N,) class indices. A k above C counts as C.

    Returns:
        {"top1": .., "top5": ..} (keys "top{k}").
    """
    logits = _tensor(logits, "logits", 2)
    labels = _tensor(labels, "labels", 1).to(logits.device).long()
    n, c = logits.shape
    if labels.shape[0] != n:
        raise InputError(f"{labels.shape[0]} labels for {n} rows of logits")
    if n == 0:
        raise InputError("no rows to score")
    if bool(((labels < 0) | (labels >= c)).any()):
        raise InputError(f"labels must be class indices in 0..{c - 1}")
    kmax = min(max(int(k) for k in ks), c)
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    top = logits.topk(kmax, dim=1).indices
    hit = (top == labels[:, None]).cumsum(dim=1) > 0
    return {f"top{k}": float(hit[:, min(int(k), c) - 1].float().mean()) for k in ks}


@dataclass
class Heatmap:
    """A cosine matrix with rows and columns grouped by class (CWCL Figs. 7-8).

    matrix: (R, C) float32 numpy, `matrix[i, j] = cos(a[row_order[i]], b[col_order[j]])`.
    row_labels / col_labels: the class of each row / column (tick labels), in display order.
    row_order / col_order: original indices of the displayed rows / columns.
    classes: the class order used for grouping.
    """

    matrix: np.ndarray
    row_labels: list
    col_labels: list
    row_order: np.ndarray
    col_order: np.ndarray
    classes: list = field(default_factory=list)


def _class_order(labels: Sequence[Hashable], classes: list) -> np.ndarray:
    rank = {c: i for i, c in enumerate(classes)}
    keep = [i for i, lab in enumerate(labels) if lab in rank]
    return np.array(sorted(keep, key=lambda i: rank[labels[i]]), dtype=np.int64)  # stable within a class


def similarity_heatmap(
    a,
    b,
    labels_a: Sequence[Hashable],
    labels_b: Sequence[Hashable],
    classes: Sequence[Hashable] | None = None,
) -> Heatmap:
    """Cosine similarities of a (Na, d) against b (Nb, d), rows and columns grouped by class.

    Args:
        labels_a, labels_b: the class of each row of a / b.
        classes: group order; rows or columns whose class is not listed are left out. Default:
            every class seen, sorted.
    """
    a, b = _tensor(a, "a", 2).float(), _tensor(b, "b", 2).float()
    if a.shape[1] != b.shape[1]:
        raise InputError(f"a and b must share the embedding width; got {a.shape[1]} and {b.shape[1]}")
    labels_a, labels_b = list(labels_a), list(labels_b)
    if len(labels_a) != a.shape[0] or len(labels_b) != b.shape[0]:
        raise InputError(
            f"one label per row: {len(labels_a)} labels for {a.shape[0]} rows of a, "
            f"{len(labels_b)} for {b.shape[0]} rows of b"
        )
    if classes is None:
        seen = set(labels_a) | set(labels_b)
        try:
            classes = sorted(seen)
        except TypeError:  # mixed label types
            classes = sorted(seen, key=str)
    classes = list(classes)
    row_order, col_order = _class_order(labels_a, classes), _class_order(labels_b, classes)
    rows = F.normalize(a[torch.as_tensor(row_order, device=a.device)], dim=-1)
    cols = F.normalize(b[torch.as_tensor(col_order, device=b.device)], dim=-1).to(rows.device)
    matrix = (rows @ cols.T).cpu().numpy().astype(np.float32)
    return Heatmap(
        matrix=matrix,
        row_labels=[labels_a[i] for i in row_order],
        col_labels=[labels_b[i] for i in col_order],
        row_order=row_order,
        col_order=col_order,
        classes=classes,
    )


def modality_gap(a, b) -> float:
    """Euclidean distance between the means of the L2-normalised rows of a (Na, d) and b (Nb, d)."""
    a, b = _tensor(a, "a", 2).float(), _tensor(b, "b", 2).float()
    if a.shape[1] != b.shape[1] or a.shape[0] == 0 or b.shape[0] == 0:
        raise InputError(f"a and b must be non-empty and share d; got {tuple(a.shape)} and {tuple(b.shape)}")
    gap = F.normalize(a, dim=-1).mean(dim=0) - F.normalize(b, dim=-1).mean(dim=0).to(a.device)
    return float(gap.norm())


@dataclass
class ProbeResult:
    """Top-1 accuracy of a -> b retrieval among each trial's query pairs (Maestro analysis).

    direct_*: cosine in the shared space (None when a and b have different widths);
    asif_*: ASIF relative representations through the trial's anchors. Means and standard
    deviations (ddof=1) over trials; `*_trials` the per-trial accuracies. The remaining fields
    are the protocol actually used (after scaling down for small sets).
    """

    direct_mean: float | None
    direct_std: float | None
    asif_mean: float
    asif_std: float
    direct_trials: np.ndarray | None
    asif_trials: np.ndarray
    trials: int
    n_anchors: int
    n_queries: int
    k: int
    p: float
    seed: int
    chance: float


def retrieval_probe(
    a,
    b,
    *,
    trials: int = 100,
    n_anchors: int = 900,
    n_queries: int = 100,
    k: int = 90,
    p: float = 8.0,
    seed: int = 0,
) -> ProbeResult:
    """Direct-cosine and ASIF retrieval probes over paired items (row i of a pairs with row i of b).

    Each trial draws `n_queries` pairs as queries and candidates, and `n_anchors` other pairs as
    ASIF anchors; each query (a side) retrieves among the candidates' b side; accuracy = top-1 hits.
    Paper protocol: 100 trials x (900 anchors, 100 queries), k = 90, p = 8.

    Scaling down when N < n_anchors + n_queries: `n_queries = min(n_queries, max(2, N // 10))`,
    `n_anchors = N - n_queries`, and k shrinks with the anchors to keep the requested ratio
    k / n_anchors (90 / 900 = 0.1 by default): `k = max(1, round(ratio * n_anchors))`. k never
    exceeds n_anchors.

    Args:
        a: (N, da); b: (N, db). seed: numpy seed for the draws.
    """
    a, b = _tensor(a, "a", 2).float(), _tensor(b, "b", 2).float()
    n = a.shape[0]
    if b.shape[0] != n:
        raise InputError(f"a and b must be paired row by row; got {n} and {b.shape[0]} rows")
    if trials < 1:
        raise InputError(f"trials must be positive; got {trials}")
    if n < 4:
        raise InputError(f"a retrieval probe needs at least 4 pairs (2 queries, 2 anchors); got {n}")
    ratio = k / n_anchors
    if n < n_anchors + n_queries:
        n_queries = min(n_queries, max(2, n // 10))
        n_anchors = n - n_queries
        k = max(1, round(ratio * n_anchors))
    k = min(k, n_anchors)
    b = b.to(a.device)
    rng = np.random.default_rng(seed)
    direct = [] if a.shape[1] == b.shape[1] else None
    asif = []
    truth = torch.arange(n_queries, device=a.device)
    # Imported here: retrieval owns ASIF; metrics stays importable without faiss being touched.
    from xmodal_core.retrieval import asif_similarity

    for _ in range(trials):
        perm = torch.as_tensor(rng.permutation(n), device=a.device)
        q, anchors = perm[:n_queries], perm[n_queries : n_queries + n_anchors]
        if direct is not None:
            sim = F.normalize(a[q], dim=-1) @ F.normalize(b[q], dim=-1).T
            direct.append(float((sim.argmax(dim=1) == truth).float().mean()))
        sim = asif_similarity(a[q], a[anchors], b[q], b[anchors], k=k, p=p)
        asif.append(float((sim.argmax(dim=1) == truth).float().mean()))

    def spread(x: list[float]) -> float:
        return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0

    return ProbeResult(
        direct_mean=float(np.mean(direct)) if direct is not None else None,
        direct_std=spread(direct) if direct is not None else None,
        asif_mean=float(np.mean(asif)),
        asif_std=spread(asif),
        direct_trials=np.array(direct) if direct is not None else None,
        asif_trials=np.array(asif),
        trials=trials,
        n_anchors=n_anchors,
        n_queries=n_queries,
        k=k,
        p=p,
        seed=seed,
        chance=1.0 / n_queries,
    )
