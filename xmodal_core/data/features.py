"""Frozen-feature cache: pooled (and token-level) tower outputs computed once, read many times.

Heads trained on a frozen tower read its features from here instead of running the tower
every step. Layout:

    features_dir()/ENCODER/WEIGHTS_ID-fc1/pooled/shard-*.safetensors
                                         /tokens/shard-*.safetensors

`WEIGHTS_ID` is the encoder's `weights_id` (a hash of its weights and preprocessing
version), so a changed model or preprocessing reads from a fresh folder and never sees
old entries. Entries are keyed by a digest of the item's content (the text, or the
bytes of the image or audio file) rather than the record id alone, so a rebuilt set
whose file changed is recomputed, and captions shared by several records are computed
once; `get(records)` maps each record to its entry.

Every shard is written to a temporary file and renamed: a killed extraction loses at
most the shard it was filling, and the next run computes only what is missing. Two
processes may extract into the same folder at once: each writes its own shards, and
readers take the first copy of a key.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.data.manifest import Record, load_manifest
from xmodal_core.errors import DatasetError, InputError, XmodalError
from xmodal_core.fsio import atomic_path, atomic_write_json

CACHE_VERSION = "fc1"
SHARD_ITEMS = 256          # flush a shard after this many new items ...
SHARD_SECONDS = 60.0       # ... or after this long, whichever comes first
TOKEN_DTYPE = np.float16   # token features are stored in half precision (relative error ~1e-3)

Progress = Callable[[int, int], None]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_") or "encoder"


@dataclass
class _Digests:
    """Content digests of files, remembered by (path, size, mtime) within a process."""

    memo: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def of(self, modality: str, item: str) -> str:
        if modality == "text":
            return hashlib.sha256(b"text\x00" + item.encode("utf-8")).hexdigest()[:32]
        try:
            st = os.stat(item)
        except OSError as exc:
            raise DatasetError(f"cannot read {item}: {exc.strerror}") from None
        key = (item, st.st_size, st.st_mtime_ns)
        digest = self.memo.get(key)
        if digest is None:
            h = hashlib.sha256(b"file\x00")
            with open(item, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digest = self.memo[key] = h.hexdigest()[:32]
        return digest


_DIGESTS = _Digests()


class _ShardStore:
    """One kind ("pooled" or "tokens") of one encoder's entries: key -> (shard, row)."""

    def __init__(self, directory: Path, kind: str):
        self.dir = directory / kind
        self.kind = kind
        self.index: dict[str, tuple[str, int]] = {}
        self.shards: dict[str, list[str]] = {}

    def refresh(self) -> None:
        """Read the key lists of shards written since the last refresh; forget deleted ones."""
        from safetensors import safe_open

        if not self.dir.is_dir():
            return
        present = {p.name for p in self.dir.glob("shard-*.safetensors")}
        gone = set(self.shards) - present
        if gone:
            for name in gone:
                del self.shards[name]
            self.index = {k: v for k, v in self.index.items() if v[0] not in gone}
        for name in sorted(present - set(self.shards)):
            try:
                with safe_open(str(self.dir / name), framework="np") as fh:
                    keys = json.loads((fh.metadata() or {})["keys"])
            except FileNotFoundError:
                continue  # compacted away between listing and opening
            except Exception as exc:  # safetensors raises its own SafetensorError; KeyError/ValueError for bad metadata
                raise DatasetError(f"feature shard {self.dir / name} is unreadable ({exc}); "
                                   "delete it and extract again") from None
            self.shards[name] = keys
            for row, key in enumerate(keys):
                self.index.setdefault(key, (name, row))

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.index]

    def write(self, tensors: dict[str, np.ndarray], keys: list[str], meta: dict[str, str]) -> Path:
        """A new shard (temporary file, then rename), added to the index."""
        from safetensors.numpy import save_file

        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        with atomic_path(self.dir / name) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                      metadata={**meta, "keys": json.dumps(keys)})
        self.shards[name] = keys
        for row, key in enumerate(keys):
            self.index.setdefault(key, (name, row))
        return self.dir / name

    def read(self, keys: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        """shard name -> its tensors, for the shards holding `keys` (retries once after a compaction)."""
        from safetensors.numpy import load_file

        for attempt in range(2):
            needed = sorted({self.index[k][0] for k in keys})
            try:
                return {name: load_file(str(self.dir / name)) for name in needed}
            except FileNotFoundError:
                if attempt:
                    raise
                self.refresh()
        raise AssertionError("unreachable")


@dataclass
class ExtractReport:
    """What an extraction did."""

    dataset: str
    encoder: str
    weights_id: str
    modality: str
    kinds: list[str]
    records: int
    unique_items: int
    cached: int
    computed: int
    skipped: list[tuple[str, str]]
    seconds: float
    items_per_second: float
    directory: str

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [f"{self.dataset} x {self.encoder} ({self.modality}, {'+'.join(self.kinds)}): {self.records} records, "
                 f"{self.unique_items} distinct items; {self.cached} cached, {self.computed} computed "
                 f"in {self.seconds:.1f} s ({self.items_per_second:.1f} items/s)",
                 f"  cache: {self.directory}"]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)}:")
            lines += [f"    {rid}: {why}" for rid, why in self.skipped[:20]]
        return "\n".join(lines)


class FeatureCache:
    """Cached outputs of one frozen encoder.

    Args:
        encoder: a registry name (loaded on first use) or an `Encoder`.
        device: where to load a named encoder ("cpu", "cuda", None = auto).
        root: cache folder (default `paths.features_dir()`).
        shard_items: flush a shard after this many newly computed items.

    Example:
        cache = FeatureCache("minilm")
        x = cache.get(load_manifest("emoji", split="train"), "text")   # (N, 384)
    """

    def __init__(self, encoder: Any, *, device: str | None = None, root: str | Path | None = None,
                 shard_items: int = SHARD_ITEMS):
        self._encoder = None if isinstance(encoder, str) else encoder
        self._name = encoder if isinstance(encoder, str) else encoder.name
        self._device = device
        self._root = Path(root) if root else None
        self.shard_items = max(1, int(shard_items))
        self._stores: dict[str, _ShardStore] = {}

    # -- identity ---------------------------------------------------------------------------

    @property
    def encoder(self):
        """The loaded encoder (loads a named one on first use)."""
        if self._encoder is None:
            from xmodal_core.registry import get_encoder

            self._encoder = get_encoder(self._name, device=self._device)
        return self._encoder

    @property
    def name(self) -> str:
        return self._name

    @property
    def modality(self) -> str:
        return self.encoder.modality

    @property
    def directory(self) -> Path:
        """features_dir()/ENCODER/WEIGHTS_ID-VERSION: changes whenever weights or preprocessing do."""
        root = self._root or paths.features_dir()
        return root / _slug(self._name) / f"{_slug(self.encoder.weights_id)}-{CACHE_VERSION}"

    def _store(self, kind: str) -> _ShardStore:
        if kind not in self._stores:
            d = self.directory
            d.mkdir(parents=True, exist_ok=True)
            info = d / "info.json"
            if not info.is_file():
                _atomic_json(info, {"encoder": self._name, "weights_id": self.encoder.weights_id,
                                    "modality": self.encoder.modality, "dim": int(self.encoder.dim),
                                    "token_dim": int(getattr(self.encoder, "token_dim", 0) or 0),
                                    "cache_version": CACHE_VERSION})
            self._stores[kind] = _ShardStore(d, kind)
        store = self._stores[kind]
        store.refresh()
        return store

    # -- keys ---------------------------------------------------------------------------------

    def _items(self, records: Sequence[Record], modality: str | None) -> tuple[str, list[Any]]:
        modality = modality or self.encoder.modality
        if modality == "audio":
            modality = "speech"
        if modality != self.encoder.modality:
            raise InputError(f"{self._name} encodes {self.encoder.modality}, not {modality}")
        items = []
        for r in records:
            item = r.item(modality)
            if item is None:
                raise InputError(f"record {r.id} has no {modality}; filter records with r.item({modality!r}) first")
            items.append(item)
        return modality, items

    def keys(self, records: Sequence[Record], modality: str | None = None) -> list[str]:
        """The cache key of each record's item: a digest of the text or of the file's bytes."""
        modality, items = self._items(records, modality)
        return [_DIGESTS.of(modality, it) for it in items]

    # -- reading ------------------------------------------------------------------------------

    def get(self, records: Sequence[Record], modality: str | None = None, *, progress: Progress | None = None,
            batch_size: int | None = None) -> np.ndarray:
        """Pooled, unit-norm embeddings, computing (and caching) only what is missing.

        Args:
            records: manifest records that all have the encoder's modality.
            modality: "text" | "speech" | "image" (default: the encoder's); a check.
            progress: callable(done, total) over records.
            batch_size: items per forward pass when computing.

        Returns:
            (N, dim) float32, row i for records[i].

        Raises:
            DatasetError: an item cannot be encoded (names the record).
        """
        keys = self.keys(records, modality)
        self._fill("pooled", records, keys, progress=progress, batch_size=batch_size, skip_errors=False)
        return self._gather_pooled(keys)

    def get_tokens(self, records: Sequence[Record], modality: str | None = None, *, progress: Progress | None = None,
                   batch_size: int | None = None):
        """Token-level features, computing (and caching) only what is missing.

        Returns:
            tokens: (N, T, token_dim) torch.float32, zero where padded (stored as float16).
            mask: (N, T) torch.bool, True where a token belongs to the item.
        """
        import torch

        keys = self.keys(records, modality)
        self._fill("tokens", records, keys, progress=progress, batch_size=batch_size, skip_errors=False)
        per_item = self._gather_tokens(keys)
        t = max((x.shape[0] for x in per_item), default=0)
        d = per_item[0].shape[1] if per_item else int(self.encoder.token_dim)
        tokens = torch.zeros(len(per_item), t, d, dtype=torch.float32)
        mask = torch.zeros(len(per_item), t, dtype=torch.bool)
        for i, x in enumerate(per_item):
            tokens[i, :x.shape[0]] = torch.from_numpy(x.astype(np.float32))
            mask[i, :x.shape[0]] = True
        return tokens, mask

    load_tokens = get_tokens

    def cached(self, records: Sequence[Record], modality: str | None = None, kind: str = "pooled") -> np.ndarray:
        """(N,) bool: which records already have an entry."""
        keys = self.keys(records, modality)
        store = self._store(kind)
        return np.array([k in store.index for k in keys], dtype=bool)

    def _gather_pooled(self, keys: Sequence[str]) -> np.ndarray:
        store = self._store("pooled")
        shards = store.read(keys)
        out = np.empty((len(keys), int(self.encoder.dim)), dtype=np.float32)
        for i, k in enumerate(keys):
            name, row = store.index[k]
            out[i] = shards[name]["embeddings"][row]
        return out

    def _gather_tokens(self, keys: Sequence[str]) -> list[np.ndarray]:
        store = self._store("tokens")
        shards = store.read(keys)
        offsets = {name: np.concatenate([[0], np.cumsum(t["lengths"])]) for name, t in shards.items()}
        out = []
        for k in keys:
            name, row = store.index[k]
            a, b = offsets[name][row], offsets[name][row + 1]
            out.append(shards[name]["tokens"][a:b])
        return out

    # -- computing ----------------------------------------------------------------------------

    def extract(self, records: Sequence[Record], modality: str | None = None, *, tokens: bool = False,
                progress: Progress | None = None, batch_size: int | None = None, dataset: str = "") -> ExtractReport:
        """Fill the cache for these records (pooled, and token-level when `tokens`); bad items are skipped.

        Records without the encoder's modality are left out (not an error here).
        """
        start = time.perf_counter()
        modality = modality or self.encoder.modality
        usable = [r for r in records if r.item("speech" if modality == "audio" else modality) is not None]
        skipped: list[tuple[str, str]] = []
        keyed, keys = [], []
        for r in usable:
            try:
                keys.append(self.keys([r], modality)[0])
                keyed.append(r)
            except XmodalError as exc:
                skipped.append((r.id, str(exc)))
        kinds = ["pooled"] + (["tokens"] if tokens else [])
        fills = {kind: self._fill(kind, keyed, keys, progress=progress, batch_size=batch_size, skip_errors=True)
                 for kind in kinds}
        for rep in fills.values():
            skipped += [s for s in rep["skipped"] if s not in skipped]
        cached, computed = fills["pooled"]["cached"], fills["pooled"]["computed"]
        seconds = time.perf_counter() - start
        return ExtractReport(dataset=dataset, encoder=self._name, weights_id=self.encoder.weights_id, modality=modality,
                             kinds=kinds, records=len(usable), unique_items=len(set(keys)), cached=cached,
                             computed=computed, skipped=skipped, seconds=round(seconds, 3),
                             items_per_second=round(computed / seconds, 2) if computed and seconds > 0 else 0.0,
                             directory=str(self.directory))

    def _fill(self, kind: str, records: Sequence[Record], keys: Sequence[str], *, progress: Progress | None,
              batch_size: int | None, skip_errors: bool) -> dict:
        """Compute the missing keys of one kind in shard-sized chunks, writing each chunk as a shard."""
        store = self._store(kind)
        modality = self.encoder.modality
        item_of = {}
        for r, k in zip(records, keys):
            item_of.setdefault(k, (r.id, r.item(modality)))
        todo = store.missing(keys)
        # Progress counts records: those whose key is cached are done from the start.
        count = dict.fromkeys(todo, 0)
        for k in keys:
            if k in count:
                count[k] += 1
        total = len(keys)
        n_cached = len(set(keys)) - len(todo)
        done = total - sum(count.values())
        if progress is not None:
            progress(done, total)
        skipped: list[tuple[str, str]] = []
        pending_keys: list[str] = []
        pending: list[np.ndarray] = []
        last_flush = time.monotonic()
        computed = 0
        step = self.shard_items
        for c0 in range(0, len(todo), step):
            # Another process may have filled some of these since we looked.
            store.refresh()
            chunk = [k for k in todo[c0:c0 + step] if k not in store.index]
            if not chunk:
                done += sum(count[k] for k in todo[c0:c0 + step])
                continue
            before = done

            def inner(n: int, _total: int) -> None:
                if progress is not None:
                    progress(min(before + n, total), total)

            results = self._compute(kind, [item_of[k][1] for k in chunk], batch_size, inner)
            for k, res in zip(chunk, results):
                if isinstance(res, Exception):
                    if not skip_errors:
                        if pending_keys:  # keep what this chunk did compute
                            self._flush(store, kind, pending_keys, pending)
                        raise DatasetError(f"cannot encode record {item_of[k][0]} ({item_of[k][1]}): {res}") from None
                    skipped.append((item_of[k][0], str(res)))
                else:
                    pending_keys.append(k)
                    pending.append(res)
                    computed += 1
            done += sum(count[k] for k in todo[c0:c0 + step])
            if pending_keys and (len(pending_keys) >= step or time.monotonic() - last_flush > SHARD_SECONDS):
                self._flush(store, kind, pending_keys, pending)
                pending_keys, pending, last_flush = [], [], time.monotonic()
            if progress is not None:
                progress(min(done, total), total)
        if pending_keys:
            self._flush(store, kind, pending_keys, pending)
        return {"cached": n_cached, "computed": computed, "skipped": skipped}

    def _compute(self, kind: str, items: list[Any], batch_size: int | None, progress: Progress | None = None) -> list[Any]:
        """Features per item (pooled: (dim,); tokens: (T_i, d)); an item that fails yields its exception."""
        try:
            return self._compute_batch(kind, items, batch_size, progress)
        except (XmodalError, ValueError, OSError, RuntimeError) as exc:
            if len(items) == 1:
                return [exc]
        # Some item in the chunk is bad: find it (and keep the others) one by one.
        out: list[Any] = []
        for it in items:
            try:
                out.extend(self._compute_batch(kind, [it], batch_size))
            except (XmodalError, ValueError, OSError, RuntimeError) as exc:
                out.append(exc)
        return out

    def _compute_batch(self, kind: str, items: list[Any], batch_size: int | None,
                       progress: Progress | None = None) -> list[np.ndarray]:
        enc = self.encoder
        if kind == "pooled":
            emb = enc.encode(items, batch_size=batch_size, progress=progress)
            return list(np.asarray(emb, dtype=np.float32))
        bs = batch_size or getattr(enc, "batch_size", 16)
        out = []
        for b0 in range(0, len(items), bs):
            tokens, mask = enc.encode_tokens(items[b0:b0 + bs])
            tokens, mask = tokens.detach().float().cpu().numpy(), mask.detach().cpu().numpy().astype(bool)
            out += [tokens[i][mask[i]].astype(TOKEN_DTYPE) for i in range(len(tokens))]
            if progress is not None:
                progress(len(out), len(items))
        return out

    def _flush(self, store: _ShardStore, kind: str, keys: list[str], values: list[np.ndarray]) -> None:
        meta = {"encoder": self._name, "weights_id": self.encoder.weights_id, "kind": kind, "cache_version": CACHE_VERSION}
        if kind == "pooled":
            store.write({"embeddings": np.stack(values).astype(np.float32)}, keys, meta)
        else:
            store.write({"tokens": np.concatenate(values).astype(TOKEN_DTYPE),
                         "lengths": np.array([v.shape[0] for v in values], dtype=np.int64)}, keys, meta)

    # -- housekeeping -------------------------------------------------------------------------

    def compact(self, kind: str = "pooled") -> int:
        """Merge this encoder's shards of one kind into one; returns how many shards were merged.

        Holds a lock so two compactions never race; readers that still list a merged shard
        re-read the folder and find the merged one.
        """
        store = self._store(kind)
        lock_path = store.dir / ".compact.lock"
        store.dir.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            store.refresh()
            names = sorted(store.shards)
            if len(names) < 2:
                return 0
            keys: list[str] = []
            seen: set[str] = set()
            rows: list[tuple[str, int]] = []
            for name in names:
                for row, k in enumerate(store.shards[name]):
                    if k not in seen:
                        seen.add(k)
                        keys.append(k)
                        rows.append((name, row))
            data = store.read(keys)
            if kind == "pooled":
                values = [data[n]["embeddings"][r] for n, r in rows]
            else:
                offsets = {n: np.concatenate([[0], np.cumsum(t["lengths"])]) for n, t in data.items()}
                values = [data[n]["tokens"][offsets[n][r]:offsets[n][r + 1]] for n, r in rows]
            self._flush(store, kind, keys, values)
            for name in names:
                (store.dir / name).unlink(missing_ok=True)
            store.refresh()
            return len(names)

    def stale_directories(self) -> list[Path]:
        """Cache folders of this encoder name for other weights or preprocessing (no longer read)."""
        parent = self.directory.parent
        return [d for d in parent.iterdir() if d.is_dir() and d != self.directory] if parent.is_dir() else []


def text_features(encoder: str, texts: Sequence[str]) -> np.ndarray:
    """(N, dim) unit rows of plain texts through a text encoder, from the feature cache (computed once
    per text): class and vocabulary names that every run and validation asks for again."""
    return FeatureCache(encoder).get([Record(id=f"text:{i}", text=t) for i, t in enumerate(texts)], "text")


def _atomic_json(path: Path, obj: dict) -> None:
    atomic_write_json(path, obj)


def extract_features(dataset: str, encoder: Any, *, tokens: bool = False, split: str | None = None,
                     limit: int | None = None, batch_size: int | None = None, device: str | None = None,
                     progress: Progress | None = None) -> ExtractReport:
    """`xmodal features extract`: fill the cache for every record of a built set that has the encoder's modality.

    Args:
        dataset: a built set's name or a manifest path.
        encoder: a registry name or an `Encoder`.
        tokens: also store token-level features.
        split: only this split.
        limit: only the first `limit` usable records.
    """
    cache = FeatureCache(encoder, device=device)
    modality = cache.modality
    records = [r for r in load_manifest(dataset, split=split) if r.item(modality) is not None]
    if not records:
        raise DatasetError(f"{dataset} has no {modality} records{' in split ' + split if split else ''} "
                           f"for {cache.name}; pick an encoder of another modality")
    if limit is not None:
        records = records[:limit]
    report = cache.extract(records, tokens=tokens, progress=progress, batch_size=batch_size, dataset=str(dataset))
    for kind in report.kinds:
        cache.compact(kind)
    return report
