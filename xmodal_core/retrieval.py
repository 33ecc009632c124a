"""Search across modalities: a faiss vector index, coarse-to-fine reranking, ASIF relative representations.

`VectorIndex` is the one index class (exact `flat`, or approximate `ivf` / `hnsw` past ~100k
vectors); `coarse_to_fine` reranks an index's top candidates with a slower scorer (FaST-VGS);
`asif_similarity` compares two spaces that were never aligned, through paired anchors (ASIF).
"""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmodal_core.errors import InputError
from xmodal_core.fsio import atomic_path

__all__ = [
    "VectorIndex",
    "IndexKind",
    "CoarseToFineResult",
    "coarse_to_fine",
    "relative_representation",
    "asif_similarity",
]

IndexKind = str  # "flat" | "ivf" | "hnsw"
_KINDS = ("flat", "ivf", "hnsw")
_FORMAT = "xmodal-vector-index/1"


def _faiss():
    import faiss  # imported lazily: the app imports this module before anything needs an index

    return faiss


def _as_matrix(x: Tensor | np.ndarray | Sequence, what: str) -> np.ndarray:
    """Any (n, d) or (d,) float array-like -> (n, d) C-contiguous float32 numpy on the CPU."""
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{what} must be a (n, d) matrix or one (d,) vector; got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _normalise_rows(x: np.ndarray, what: str) -> np.ndarray:
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(f"{what} rows {_few(bad)} contain NaN or inf; fix the encoder output before indexing")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms < 1e-12).any():
        bad = np.flatnonzero(norms[:, 0] < 1e-12)
        raise InputError(f"{what} rows {_few(bad)} are all zeros and cannot be normalised")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


# faiss parallelises over queries; for a handful of queries the OpenMP team only adds
# synchronisation, which on a busy machine costs 10-20 ms per search (measured on 2 cores).
_PARALLEL_FROM = 8


@contextmanager
def _one_omp_thread():
    """Run faiss single-threaded in this thread (OpenMP's thread count is a per-thread setting)."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _few(items: Iterable, n: int = 5) -> str:
    items = list(items)
    head = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in items[:n])
    return head + (f" (and {len(items) - n} more)" if len(items) > n else "")


class VectorIndex:
    """A faiss inner-product index over L2-normalised vectors, with string ids chosen by the caller.

    Vectors are normalised inside (`add` and `search`), so scores are cosine similarities;
    rows that are all zeros, NaN or inf are rejected with InputError.

    Kinds and their defaults (every default can be overridden in the constructor, and `nprobe` /
    `ef_search` also later as attributes):

    - `flat`: exact brute-force search (IndexFlatIP). Use up to ~100k vectors.
    - `ivf`: inverted lists (IndexIVFFlat). Searches exactly (a flat index) until it holds
      `ivf_min_train` vectors (default 10 000); at the `add` that reaches it, it trains k-means
      (spherical) on everything held, with `nlist = round(4 * sqrt(n))` lists (capped at n / 39,
      faiss' minimum of points per centroid) unless `nlist` is given; nlist is then fixed (rebuild
      a fresh index after growing ~10x). `nprobe` defaults to `max(16, nlist // 8)` lists: on the
      cross-modal queries of bench/index.py (d = 384) nlist // 16 gave recall@10 0.985 at 100k
      but 0.934 at 1M (nlist = 4000), so the default probes 1/8 of the lists. IVF-Flat is the
      slower choice at 1M on a CPU (~10 ms a query at nlist // 16 on 2 cores): prefer hnsw there.
    - `hnsw`: graph index (IndexHNSWFlat), `M = 32`, `ef_construction = 40`, `ef_search = 128`
      (recall@10 >= 0.95 on the same benchmark). faiss cannot delete from a graph, so `remove`
      hides ids (search skips them) and the graph is rebuilt from the live vectors once more
      than a quarter of it is hidden.

    Searches may run from several threads at once; `add` / `remove` must not overlap them.

    Behaviour at the edges: ids must be unique (within an `add` and against the index) and
    non-empty strings; `search` with `k > len(index)` returns `len(index)` columns; an
    approximate index that finds fewer than k live vectors for a query fills the tail with
    id `None` and score `-inf`; searching an empty index raises InputError.
    """

    def __init__(
        self,
        dim: int,
        kind: IndexKind = "flat",
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        ivf_min_train: int = 10_000,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 128,
    ):
        if kind not in _KINDS:
            raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(_KINDS)}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InputError(f"dim must be a positive integer; got {dim!r}")
        self.dim = int(dim)
        self.kind = kind
        self.params = {
            "nlist": nlist,
            "nprobe": nprobe,
            "ivf_min_train": int(ivf_min_train),
            "hnsw_m": int(hnsw_m),
            "ef_construction": int(ef_construction),
            "ef_search": int(ef_search),
        }
        self._label_of: dict[str, int] = {}  # id -> faiss label (int64, never reused)
        self._ids: list[str | None] = []  # label -> id, None once removed
        self._hidden: set[int] = set()  # hnsw: removed labels still in the graph
        self._hidden_params = None  # cached faiss search parameters that skip `_hidden`
        self._trained = kind != "ivf"  # ivf holds a flat index until it trains
        self._index = self._new_index(kind if self._trained else "flat")

    # -- construction -------------------------------------------------------------------------

    def _new_index(self, kind: str, nlist: int | None = None):
        faiss = _faiss()
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, self.params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.params["ef_construction"]
            hnsw.hnsw.efSearch = self.params["ef_search"]
            return faiss.IndexIDMap2(hnsw)
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.spherical = True  # centroids on the sphere, like the data
        ivf.cp.niter = 10
        ivf.cp.max_points_per_centroid = 64  # subsample training: k-means cost, not recall, is the limit
        return ivf

    @property
    def nlist(self) -> int | None:
        """IVF lists (None before training and for other kinds)."""
        return int(self._index.nlist) if self.kind == "ivf" and self._trained else None

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (None before training and for other kinds)."""
        return int(self._index.nprobe) if self.kind == "ivf" and self._trained else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            raise InputError(f"nprobe applies to ivf indexes; this one is {self.kind}")
        self.params["nprobe"] = int(value)
        if self._trained:
            self._index.nprobe = max(1, min(int(value), self._index.nlist))

    @property
    def ef_search(self) -> int | None:
        """HNSW candidate list size per query (None for other kinds)."""
        return int(self._hnsw().hnsw.efSearch) if self.kind == "hnsw" else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self.kind != "hnsw":
            raise InputError(f"ef_search applies to hnsw indexes; this one is {self.kind}")
        self.params["ef_search"] = int(value)
        self._hnsw().hnsw.efSearch = int(value)

    def _hnsw(self):
        return _faiss().downcast_index(self._index.index)

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._label_of

    def __repr__(self) -> str:
        extra = ""
        if self.kind == "ivf":
            extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self._trained else ", untrained"
        elif self.kind == "hnsw":
            extra = f", M={self.params['hnsw_m']}, ef_search={self.ef_search}"
        return f"VectorIndex(kind={self.kind!r}, dim={self.dim}, size={len(self)}{extra})"

    def ids(self) -> list[str]:
        """The live ids, in insertion order."""
        return [i for i in self._ids if i is not None]

    # -- add / remove -------------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: Tensor | np.ndarray) -> None:
        """Add vectors under new ids.

        Args:
            ids: n unique, non-empty strings not already in the index.
            vectors: (n, dim) float; normalised here (zero / NaN / inf rows are rejected).
        """
        if isinstance(ids, str):
            raise InputError("ids must be a list of strings, not one string")
        ids = list(ids)
        x = _as_matrix(vectors, "vectors")
        if x.shape[1] != self.dim:
            raise InputError(f"vectors have dim {x.shape[1]}, this index holds dim {self.dim}")
        if len(ids) != x.shape[0]:
            raise InputError(f"got {len(ids)} ids for {x.shape[0]} vectors; give one id per row")
        if not ids:
            return
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise InputError(f"ids must be non-empty strings; got {_few(bad)}")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = [i for i in ids if i in seen or seen.add(i)]
            raise InputError(f"duplicate ids within this add: {_few(dict.fromkeys(dup))}")
        clash = [i for i in ids if i in self._label_of]
        if clash:
            raise InputError(f"ids already in the index: {_few(clash)}; remove them first to replace")
        x = _normalise_rows(x, "vectors")
        start = len(self._ids)
        labels = np.arange(start, start + len(ids), dtype=np.int64)
        if not self._trained and len(self) + len(ids) >= self.params["ivf_min_train"]:
            if len(self):
                held_labels, held = self._live_vectors()
                x, labels = np.concatenate([held, x]), np.concatenate([held_labels, labels])
            self._train_ivf(x, labels)
        else:
            self._index.add_with_ids(x, labels)
        self._ids.extend(ids)
        self._label_of.update(zip(ids, range(start, start + len(ids))))

    def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels (n,), vectors (n, dim)) of everything in an IDMap2-wrapped index, hidden ones dropped."""
        faiss = _faiss()
        labels = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._index.index.reconstruct_n(0, self._index.ntotal).reshape(-1, self.dim)
        if self._hidden:
            keep = ~np.isin(labels, np.fromiter(self._hidden, dtype=np.int64))
            labels, vectors = labels[keep], vectors[keep]
        return labels, np.ascontiguousarray(vectors)

    def _train_ivf(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Replace the flat stand-in by an IVF index trained on, and holding, `vectors`."""
        n = len(labels)
        nlist = self.params["nlist"] or max(1, min(round(4 * math.sqrt(n)), n // 39))
        ivf = self._new_index("ivf", nlist)
        ivf.train(vectors)
        ivf.add_with_ids(vectors, labels)
        ivf.nprobe = max(1, min(self.params["nprobe"] or max(16, nlist // 8), nlist))
        self._index, self._trained = ivf, True

    def remove(self, ids: Sequence[str], *, missing_ok: bool = False) -> int:
        """Remove ids; returns how many were removed.

        Unknown ids raise InputError unless `missing_ok`.
        """
        if isinstance(ids, str):
            raise InputError("ids must be a list of strings, not one string")
        ids = list(dict.fromkeys(ids))
        unknown = [i for i in ids if i not in self._label_of]
        if unknown and not missing_ok:
            raise InputError(f"ids not in the index: {_few(unknown)}")
        labels = np.array([self._label_of.pop(i) for i in ids if i in self._label_of], dtype=np.int64)
        if not len(labels):
            return 0
        for lab in labels:
            self._ids[lab] = None
        if self.kind == "hnsw":
            self._hidden.update(int(v) for v in labels)
            self._hidden_params = None
            if len(self._hidden) * 4 > self._index.ntotal:
                self._rebuild_hnsw()
        else:
            self._index.remove_ids(labels)
        return len(labels)

    def _rebuild_hnsw(self) -> None:
        labels, vectors = self._live_vectors()
        self._index = self._new_index("hnsw")
        self._hidden, self._hidden_params = set(), None
        if len(labels):
            self._index.add_with_ids(vectors, labels)

    # -- search -------------------------------------------------------------------------------

    def search(self, queries: Tensor | np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar vectors for each query, best first.

        Args:
            queries: (Q, dim) or one (dim,) vector; normalised here.
            k: results per query; clipped to `len(self)`.

        Returns:
            scores: (Q, k') float32 cosine similarities, k' = min(k, len(self)).
            ids: (Q, k') object array of str (None, with score -inf, where an approximate
                index found fewer than k' live vectors).
        """
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer; got {k!r}")
        if len(self) == 0:
            raise InputError("the index is empty; add vectors before searching")
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise InputError(f"queries have dim {q.shape[1]}, this index holds dim {self.dim}")
        q = _normalise_rows(q, "queries")
        k = min(int(k), len(self))
        params = self._skip_hidden(k) if self._hidden else None
        if q.shape[0] < _PARALLEL_FROM:
            with _one_omp_thread():
                scores, labels = self._index.search(q, k, params=params)
        else:
            scores, labels = self._index.search(q, k, params=params)
        id_of = self._ids
        ids = np.array([id_of[lab] if lab >= 0 else None for lab in labels.ravel().tolist()], dtype=object)
        scores = np.where(labels < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.reshape(labels.shape)

    def _skip_hidden(self, k: int):
        """HNSW search parameters that skip removed labels (built once per change of `_hidden`)."""
        if self._hidden_params is None:
            faiss = _faiss()
            batch = faiss.IDSelectorBatch(np.fromiter(self._hidden, dtype=np.int64))
            self._hidden_params = (faiss.IDSelectorNot(batch), batch)  # keep the inner selector alive
        params = _faiss().SearchParametersHNSW(sel=self._hidden_params[0], efSearch=max(self.ef_search, k))
        return params

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index, its ids and settings to one file (atomically: a temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss = _faiss()
        meta = {
            "format": _FORMAT,
            "dim": self.dim,
            "kind": self.kind,
            "trained": self._trained,
            "params": self.params,
        }
        labels = np.array([self._label_of[i] for i in self.ids()], dtype=np.int64)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                meta=np.array(json.dumps(meta)),
                index=faiss.serialize_index(self._index),
                ids=np.array(self.ids(), dtype=str),
                labels=labels,
                hidden=np.array(sorted(self._hidden), dtype=np.int64),
                next_label=np.array(len(self._ids), dtype=np.int64),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VectorIndex":
        """Read an index written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no index file at {path}")
        faiss = _faiss()
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                blob, ids, labels = z["index"], z["ids"].tolist(), z["labels"]
                hidden, next_label = z["hidden"], int(z["next_label"])
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{path} is not a saved VectorIndex ({e})") from e
        if meta.get("format") != _FORMAT:
            raise InputError(f"{path} has format {meta.get('format')!r}, expected {_FORMAT!r}")
        p = meta["params"]
        self = cls(meta["dim"], meta["kind"], **p)
        self._index = faiss.deserialize_index(blob)
        self._trained = bool(meta["trained"])
        self._ids = [None] * next_label
        for i, lab in zip(ids, labels.tolist()):
            self._ids[lab] = i
            self._label_of[i] = lab
        self._hidden = set(hidden.tolist())
        if self.kind == "hnsw":
            self.ef_search = p["ef_search"]
        elif self.kind == "ivf" and self._trained and p["nprobe"] is not None:
            self.nprobe = p["nprobe"]
        return self


# ---------------------------------------------------------------------------------------------
# coarse-to-fine


@dataclass
class CoarseToFineResult:
    """Top-k after reranking, best fine score first.

    ids: k' item ids; fine_scores, coarse_scores: (k',) float32 for the same items.
    """

    ids: list[str]
    fine_scores: np.ndarray
    coarse_scores: np.ndarray


def coarse_to_fine(
    query,
    candidates_index: VectorIndex,
    fine_scorer: Callable[[object, list[str]], Sequence[float] | np.ndarray | Tensor],
    k_coarse: int = 100,
    k: int = 10,
    *,
    query_vector: Tensor | np.ndarray | None = None,
) -> CoarseToFineResult:
    """FaST-VGS coarse-to-fine retrieval for one query.

    Takes the top `k_coarse` candidates by the index's dot-product (coarse) score, rescores them
    with `fine_scorer(query, candidate_ids) -> (len(candidate_ids),) scores`, and returns the
    top `k` by fine score (ties keep coarse order), with both scores.

    Args:
        query: what the fine scorer needs (e.g. token features); also the coarse query vector
            (dim,) unless `query_vector` is given.
        candidates_index: the gallery.
        k_coarse: candidates to rerank (clipped to the index size); k: results (clipped to k_coarse).
        query_vector: (dim,) pooled embedding for the coarse search, when `query` is not one.
    """
    if k < 1 or k_coarse < 1:
        raise InputError(f"k and k_coarse must be positive; got k={k}, k_coarse={k_coarse}")
    vec = query if query_vector is None else query_vector
    coarse, ids = candidates_index.search(vec, k_coarse)
    if coarse.shape[0] != 1:
        raise InputError(f"coarse_to_fine takes one query vector; got {coarse.shape[0]}")
    live = np.array([i is not None for i in ids[0]])
    cand_ids: list[str] = list(ids[0][live])
    coarse = coarse[0][live]
    fine = fine_scorer(query, cand_ids)
    if isinstance(fine, Tensor):
        fine = fine.detach().to("cpu", torch.float32).numpy()
    fine = np.asarray(fine, dtype=np.float32).reshape(-1)
    if fine.shape[0] != len(cand_ids):
        raise InputError(f"fine_scorer returned {fine.shape[0]} scores for {len(cand_ids)} candidates")
    order = np.argsort(-fine, kind="stable")[: min(k, len(cand_ids))]
    return CoarseToFineResult([cand_ids[i] for i in order], fine[order], coarse[order])


# ---------------------------------------------------------------------------------------------
# ASIF


def relative_representation(x: Tensor, anchors: Tensor, k: int = 90, p: float = 8.0) -> Tensor:
    """ASIF relative representation: cosine to each anchor, keep the top k, clamp at 0, ^p, L2-normalise.

    Args:
        x: (n, d) embeddings; anchors: (M, d) anchors of the same modality (any scale).
        k: anchors kept per row (clipped to M); p: exponent.

    Returns:
        (n, M) dense, mostly zero; a row whose kept cosines are all <= 0 stays all zero.
    """
    if x.dim() != 2 or anchors.dim() != 2 or x.shape[1] != anchors.shape[1]:
        raise InputError(
            f"items (n, d) and anchors (M, d) must share d; got {tuple(x.shape)} and {tuple(anchors.shape)}"
        )
    if anchors.shape[0] == 0:
        raise InputError("ASIF needs at least one anchor pair")
    if k < 1:
        raise InputError(f"k must be positive; got {k}")
    anchors = anchors.to(device=x.device, dtype=x.dtype)
    cos = F.normalize(x, dim=-1) @ F.normalize(anchors, dim=-1).T  # (n, M)
    top, idx = cos.topk(min(k, anchors.shape[0]), dim=1)
    rel = torch.zeros_like(cos).scatter(1, idx, top.clamp_min(0).pow(p))
    return F.normalize(rel, dim=-1)


def asif_similarity(
    queries: Tensor,
    query_anchors: Tensor,
    items: Tensor,
    item_anchors: Tensor,
    k: int = 90,
    p: float = 8.0,
) -> Tensor:
    """ASIF similarity between queries of one space and items of another, through paired anchors.

    Row m of `query_anchors` and row m of `item_anchors` are one pair (the same thing seen in
    each modality). Both sides become relative representations over the M anchors
    (`relative_representation`), compared by dot product.

    Args:
        queries: (Q, dq); query_anchors: (M, dq); items: (N, di); item_anchors: (M, di).
        k: anchors kept per row (90 of 900 in the paper); p: exponent (8).

    Returns:
        (Q, N) similarities in [0, 1].
    """
    if query_anchors.shape[0] != item_anchors.shape[0]:
        raise InputError(
            f"anchors are paired row by row: got {query_anchors.shape[0]} query anchors and "
            f"{item_anchors.shape[0]} item anchors"
        )
    rq = relative_representation(queries, query_anchors, k, p)
    ri = relative_representation(items, item_anchors, k, p).to(rq.device, rq.dtype)
    return rq @ ri.T
