"""Galleries: the images Search looks through, with their captions and cached embeddings.

A gallery is a list of `GalleryItem`s (an image file, a caption when one is known) plus,
per embedding model, one vector per item cached on disk and keyed by what was embedded
(the file's size and modification time, or the caption's text), so re-indexing encodes
only new or changed items and drops removed ones.

Two kinds: galleries of built data sets (default: Tux Paint stamps + emoji; ktuberling) and
any folder a person indexes. Indexing a folder reads only image files under it (by
suffix, regular files only) and never follows a link that points outside it; files that
cannot be decoded are skipped and listed with the reason.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.errors import DatasetError, ImageError, InputError, XmodalError
from xmodal_core.fsio import atomic_write
from xmodal_core.validate import is_inside

DEFAULT_NAME = "default"
DEFAULT_SETS = ("tuxpaint", "emoji")
RECORDINGS_NAME = "recordings"
KTUBERLING_NAME = "ktuberling"
# Galleries made of built data sets' images: name -> (sets, title).
SET_GALLERIES = {DEFAULT_NAME: (DEFAULT_SETS, "default (Tux Paint stamps + emoji)"),
                 KTUBERLING_NAME: (("ktuberling",), "ktuberling (the themes' objects, with their English names)")}
RECORDING_SETS = ("tuxpaint", "ktuberling", "librivox")  # people speaking (evaluation data, never trained on)
MAX_ITEMS = 50_000
EMBED_BATCH = 32
THUMB_SIZE = 256
ITEMS_NAME = "items.jsonl"
META_NAME = "gallery.json"

# A progress callback: progress(done, total).
Progress = Callable[[int, int], None]
# Items -> (n, d) float32 embeddings.
EmbedFn = Callable[[Sequence["GalleryItem"]], np.ndarray]


@dataclass(frozen=True)
class GalleryItem:
    """One image of a gallery.

    Attributes:
        id: unique in its gallery: a manifest id ("tuxpaint:animals/birds/owl.png") or
            "folder:" + the path relative to the folder.
        image: absolute path of the image file.
        caption: a sentence describing it, or None (a folder image nobody captioned yet).
        label: a class or category, or None.
        dataset: the data set name labels for this item are saved under.
        source: where it came from ("tuxpaint-stamps-default", "folder", ...).
        fingerprint: "size:mtime_ns" of the file when it was indexed (the recording, for one).
        audio: for a spoken caption: the recording (then `image` is its picture, or "").
    """

    id: str
    image: str
    caption: str | None = None
    label: str | None = None
    dataset: str = ""
    source: str = ""
    fingerprint: str = ""
    audio: str | None = None

    @property
    def text(self) -> str:
        """The caption, or words from the file name when there is none ("red_car.jpg" -> "red car")."""
        if self.caption:
            return self.caption
        return filename_words(self.image)

    @property
    def name(self) -> str:
        return Path(self.audio or self.image).name


def filename_words(path: str | Path) -> str:
    """"my-red_car (2).JPG" -> "my red car 2": a weak caption for uncaptioned files."""
    words = re.sub(r"[_\-.()\[\]]+", " ", Path(path).stem)
    return re.sub(r"\s+", " ", words).strip() or Path(path).stem


@dataclass
class Skip:
    """A file left out of a gallery, and why."""

    path: str
    reason: str


@dataclass
class IndexReport:
    """What (re-)indexing a gallery did."""

    gallery: str
    items: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    encoded: int = 0
    ignored: int = 0  # files that are not images (by suffix): not read at all
    skipped: list[Skip] = field(default_factory=list)
    seconds: float = 0.0

    def format(self) -> str:
        """One or two sentences for a person."""
        text = (f"{self.gallery}: {self.items} images ({self.added} new, {self.changed} changed, "
                f"{self.removed} removed, {self.unchanged} unchanged); encoded {self.encoded} in {self.seconds:.1f} s")
        if self.ignored:
            text += f"; {self.ignored} files that are not images were ignored"
        if self.skipped:
            shown = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in self.skipped[:5])
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            text += f". Skipped {len(self.skipped)} unreadable or unsafe files: {shown}{more}"
        return text


def _fingerprint(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def galleries_dir() -> Path:
    path = paths.home() / "galleries"
    path.mkdir(parents=True, exist_ok=True)
    return path


def folder_gallery_name(folder: str | Path) -> str:
    """A stable gallery name for a folder: its base name plus a hash of its full path."""
    resolved = Path(folder).expanduser().resolve()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", resolved.name).strip("-").lower() or "folder"
    return f"{slug[:40]}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"




def _key_file(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"


def _image_fingerprint(item: GalleryItem) -> str:
    return item.fingerprint


def _text_fingerprint(item: GalleryItem) -> str:
    return hashlib.sha1(item.text.encode("utf-8")).hexdigest()[:16]


class Gallery:
    """Items plus cached per-model embeddings. Build with `default_gallery`, `index_folder`
    or `open_gallery`; one object per gallery per process (shared by the app's threads)."""

    def __init__(self, name: str, items: Sequence[GalleryItem], *, kind: str = "folder", root: str | None = None,
                 title: str | None = None, skipped: Sequence[Skip] = ()):
        self.name = name
        self.kind = kind
        self.root = root
        self.title = title or name
        self.skipped = list(skipped)
        self._set_items(items)
        self._lock = threading.RLock()
        self._indexes: dict[str, tuple[object, np.ndarray]] = {}
        self._vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _set_items(self, items: Sequence[GalleryItem]) -> None:
        self.items = list(items)
        self._by_id = {it.id: i for i, it in enumerate(self.items)}
        if len(self._by_id) != len(self.items):
            raise DatasetError(f"gallery {self.name} has duplicate item ids")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Gallery({self.name!r}, kind={self.kind!r}, items={len(self)})"

    @property
    def folder(self) -> Path:
        return galleries_dir() / self.name

    def item(self, item_id: str) -> GalleryItem:
        try:
            return self.items[self._by_id[item_id]]
        except KeyError:
            raise InputError(f"no item {item_id!r} in gallery {self.name}") from None

    def position(self, item_id: str) -> int:
        return self._by_id[item_id]

    # -- persistence

    def save(self) -> None:
        lines = "".join(json.dumps(asdict(it), ensure_ascii=False) + "\n" for it in self.items)
        atomic_write(self.folder / ITEMS_NAME, lines.encode("utf-8"))
        meta = {"name": self.name, "kind": self.kind, "root": self.root, "title": self.title,
                "updated": time.time(), "skipped": [asdict(s) for s in self.skipped]}
        atomic_write(self.folder / META_NAME, json.dumps(meta, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, name: str) -> "Gallery":
        folder = galleries_dir() / name
        try:
            meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
            items = [GalleryItem(**json.loads(line))
                     for line in (folder / ITEMS_NAME).read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            raise InputError(f"no gallery called {name!r}: index a folder first") from None
        except (OSError, ValueError, TypeError) as exc:
            raise DatasetError(f"gallery {name!r} at {folder} is damaged ({exc}); index the folder again") from None
        return cls(name, items, kind=meta.get("kind", "folder"), root=meta.get("root"), title=meta.get("title"),
                   skipped=[Skip(**s) for s in meta.get("skipped", [])])

    # -- captions

    def with_captions(self, captions: dict[str, str]) -> int:
        """Replace captions of some items (e.g. ones a person edited on the Label page); returns
        how many changed. Caption indexes are rebuilt (only the changed captions re-encode)."""
        with self._lock:
            n = sum(1 for it in self.items if it.id in captions and captions[it.id] != it.caption)
            if n:
                self._set_items([replace(it, caption=captions[it.id]) if it.id in captions else it
                                 for it in self.items])
                self._indexes = {k: v for k, v in self._indexes.items() if not k.startswith("text:")}
                self._vectors = {k: v for k, v in self._vectors.items() if not k.startswith("text:")}
            return n

    # -- embeddings

    def embeddings(self, key: str, embed: EmbedFn, *, what: str = "image", progress: Progress | None = None,
                   batch_size: int = EMBED_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """One embedding per item under `key`, computing only those missing or stale.

        Args:
            key: names the model and what it embeds, e.g. "image:efficientnet-lite0-<hash>".
            embed: items -> (n, d) float32.
            what: "image" (stale when the file changed) or "text" (stale when the caption changed).
            progress: callable(done, total) over the items that need encoding.

        Returns:
            vectors: (N, d) float32 in item order (rows of failed items are zero).
            ok: (N,) bool, False where the item could not be embedded (e.g. the file went bad).
        """
        fingerprint = _image_fingerprint if what == "image" else _text_fingerprint
        path = self.folder / "emb" / _key_file(key)
        with self._lock:
            cached: dict[str, tuple[str, np.ndarray]] = {}
            try:
                with np.load(path, allow_pickle=False) as z:
                    for i, f, v in zip(z["ids"].tolist(), z["fps"].tolist(), z["vectors"]):
                        cached[i] = (f, v)
            except (OSError, ValueError, KeyError):
                pass  # nothing cached yet (or a damaged file): encode everything
            fps = [fingerprint(it) for it in self.items]
            todo = [i for i, (it, f) in enumerate(zip(self.items, fps)) if cached.get(it.id, ("",))[0] != f]
            dim = next(iter(cached.values()))[1].shape[0] if cached else None
            new: dict[int, np.ndarray] = {}
            failed: set[int] = set()
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                try:
                    out = np.asarray(embed([self.items[i] for i in chunk]), dtype=np.float32)
                    new.update(zip(chunk, out))
                except (ImageError, DatasetError):
                    for i in chunk:  # find the bad file(s); keep the rest
                        try:
                            new[i] = np.asarray(embed([self.items[i]]), dtype=np.float32)[0]
                        except (ImageError, DatasetError) as exc:
                            failed.add(i)
                            self.skipped.append(Skip(self.items[i].image, str(exc)))
                if progress is not None:
                    progress(min(start + batch_size, len(todo)), len(todo))
            if dim is None and new:
                dim = next(iter(new.values())).shape[0]
            if dim is None:
                raise DatasetError(f"gallery {self.name} has no items that could be embedded")
            vectors = np.zeros((len(self.items), dim), dtype=np.float32)
            ok = np.ones(len(self.items), dtype=bool)
            for i, it in enumerate(self.items):
                if i in new:
                    vectors[i] = new[i]
                elif i in failed:
                    ok[i] = False
                else:
                    vectors[i] = cached[it.id][1]
            if todo or len(cached) != len(self.items):
                keep = ok
                data = io.BytesIO()
                np.savez(data, ids=np.array([it.id for it in self.items], dtype=str)[keep],
                         fps=np.array(fps, dtype=str)[keep], vectors=vectors[keep])
                atomic_write(path, data.getvalue())
            return vectors, ok

    def embeddings_in_memory(self, key: str, embed: EmbedFn, *, what: str = "image",
                             progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`embeddings`, kept in memory after the first call (like `index`): for scoring every item."""
        with self._lock:
            hit = self._vectors.get(key)
            if hit is None:
                hit = self._vectors[key] = self.embeddings(key, embed, what=what, progress=progress)
            return hit

    def index(self, key: str, embed: EmbedFn, *, what: str = "image", progress: Progress | None = None):
        """A `retrieval.VectorIndex` over the items' embeddings under `key` (ids = item ids), kept in memory."""
        from xmodal_core.retrieval import VectorIndex

        with self._lock:
            hit = self._indexes.get(key)
            if hit is not None:
                return hit[0]
            vectors, ok = self.embeddings(key, embed, what=what, progress=progress)
            index = VectorIndex(vectors.shape[1], "flat" if ok.sum() < 100_000 else "hnsw")
            index.add([it.id for it, good in zip(self.items, ok) if good], vectors[ok])
            self._indexes[key] = (index, vectors)
            return index


# ---------------------------------------------------------------- where files may come from

# Never indexed, whatever --allow-dir says: kernel and device files, system configuration.
FORBIDDEN_ROOTS = tuple(Path(p) for p in ("/proc", "/sys", "/dev", "/etc", "/boot", "/run", "/var/run"))
DEFAULT_INDEX_ROOTS = ("~", "/usr/share", "/usr/local/share", "/media", "/mnt", "/srv")
_index_roots: list[Path] | None = None


def set_index_roots(roots: Iterable[str | Path] | None) -> None:
    """The folders under which `index_folder` accepts a folder (the app's `--allow-dir`);
    None: `$XMODAL_ALLOW_DIRS` (separated by os.pathsep), else `DEFAULT_INDEX_ROOTS`."""
    global _index_roots
    _index_roots = None if roots is None else [Path(r).expanduser().resolve() for r in roots]


def index_roots() -> list[Path]:
    """The folders a folder gallery may be indexed under (see `set_index_roots`)."""
    if _index_roots is not None:
        return list(_index_roots)
    env = os.environ.get("XMODAL_ALLOW_DIRS")
    given = [p for p in env.split(os.pathsep) if p.strip()] if env else list(DEFAULT_INDEX_ROOTS)
    return [Path(p).expanduser().resolve() for p in given]


def check_index_folder(folder: str | Path) -> Path:
    """The resolved folder, if a folder gallery may be made of it.

    Raises:
        InputError: not valid path text (NUL, lone surrogates, over-long parts); `/`, a system
            folder (`FORBIDDEN_ROOTS`), the repository or the xmodal home; or outside every
            `index_roots()` folder.
    """
    from xmodal_core.validate import check_inside, check_path_text

    given = check_path_text(folder, "folder")
    if not str(given).strip() or str(given) == ".":
        raise InputError("no folder given: type the path of a folder of images")
    resolved = given.resolve()
    # inside a system folder, the repository or the xmodal home; or holding the repository (`/`)
    if any(is_inside(resolved, r) for r in (*FORBIDDEN_ROOTS, paths.REPO_ROOT, paths.home())) \
            or is_inside(paths.REPO_ROOT, resolved):
        raise InputError(f"{str(resolved)[:200]} holds system, program or xmodal files and cannot be indexed; "
                         "give a folder of pictures")
    return check_inside(resolved, index_roots(), "folder")


def media_roots() -> list[Path]:
    """Folders whose files the app hands to the browser as they are (Gradio `allowed_paths`):
    the people's recordings the recordings gallery plays, built data sets, labelled audio, thumbnails."""
    from xmodal_core.data.builders import KTUBERLING, LIBRIVOX, TUXPAINT_STAMPS

    return [TUXPAINT_STAMPS, KTUBERLING, LIBRIVOX, paths.datasets_dir(), paths.home() / "labels" / "audio",
            thumbnails_dir()]


def served_image(gallery: "Gallery", item: GalleryItem) -> str | None:
    """`item.image` if it may still be shown: for a folder gallery, a regular file inside the
    folder (a link only if it resolves inside), as when it was indexed; None otherwise."""

    if not item.image:
        return None
    if gallery.kind != "folder" or not gallery.root:
        return item.image
    path = Path(item.image)
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or not is_inside(path, Path(gallery.root)):
        return None
    return item.image


# ---------------------------------------------------------------- building galleries

def _readable_folder(folder: str | Path) -> Path:
    """`folder` resolved, or an InputError saying why it cannot be scanned."""
    if not str(folder).strip():
        raise InputError("no folder given: type the path of a folder of images")
    root_given = Path(folder).expanduser()
    if not root_given.exists():
        raise InputError(f"folder not found: {root_given}")
    if not root_given.is_dir():
        raise InputError(f"{root_given} is a file, not a folder: give the folder that holds the images")
    root = root_given.resolve()
    if not os.access(root, os.R_OK | os.X_OK):
        raise InputError(f"folder {root} cannot be read (permission denied)")
    return root


def _regular_file_stat(path: Path, root: Path, skipped: list[Skip]) -> os.stat_result | None:
    """`path`'s stat when it is a regular file (a link only if it resolves inside `root`); else None, skip noted."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            skipped.append(Skip(str(path), "broken link"))
            return None
        if not is_inside(target, root):
            skipped.append(Skip(str(path), f"link points outside the folder ({target}): not followed"))
            return None
    try:
        st = path.stat()
    except OSError as exc:
        skipped.append(Skip(str(path), f"cannot be read ({exc.strerror})"))
        return None
    if not stat.S_ISREG(st.st_mode):
        skipped.append(Skip(str(path), "not a regular file"))
        return None
    return st


def _decoded_items(candidates: list[tuple[str, Path, str]], before: dict[str, GalleryItem], root: Path,
                   skipped: list[Skip], progress: Progress | None) -> list[GalleryItem]:
    """Gallery items for the candidates: unchanged ones reused, new or changed ones decoded (unreadable: skipped)."""
    from xmodal_core.images import load_image

    items: list[GalleryItem] = []
    for n, (item_id, path, fp) in enumerate(candidates, 1):
        old = before.get(item_id)
        if old is not None and old.fingerprint == fp:
            items.append(old)
        else:
            try:
                load_image(path)
            except ImageError as exc:
                skipped.append(Skip(str(path), str(exc)))
                continue
            except OSError as exc:  # permission denied and the like
                skipped.append(Skip(str(path), f"cannot be read ({exc})"))
                continue
            items.append(GalleryItem(id=item_id, image=str(path), caption=None, label=None,
                                     dataset=folder_gallery_name(root), source="folder", fingerprint=fp))
        if progress is not None:
            progress(n, len(candidates))
    return items


def scan_folder(folder: str | Path, *, previous: Iterable[GalleryItem] = (), max_items: int = MAX_ITEMS,
                progress: Progress | None = None) -> tuple[list[GalleryItem], list[Skip], int]:
    """The image files under `folder`, checked.

    Only regular files with an image suffix (`images.IMAGE_SUFFIXES`) are read. Symbolic
    links are followed only when they resolve inside the folder; linked folders are never
    entered (no loops, no escape). Files unchanged since `previous` (same size and mtime)
    are not decoded again; new or changed ones are decoded fully, and unreadable ones are
    skipped with the reason.

    Returns:
        (items sorted by path, skipped files, number of non-image files ignored).
    """
    from xmodal_core.images import IMAGE_SUFFIXES

    root = _readable_folder(folder)
    before = {it.id: it for it in previous}
    candidates: list[tuple[str, Path, str]] = []  # (id, path, fingerprint)
    skipped: list[Skip] = []
    ignored = 0

    def walk_error(exc: OSError) -> None:
        skipped.append(Skip(str(exc.filename), f"folder cannot be read ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=walk_error):
        dirnames.sort()
        base = Path(dirpath)
        for d in list(dirnames):
            if d.startswith("."):
                dirnames.remove(d)  # hidden folders (.git, .thumbnails) are not part of a gallery
            elif (base / d).is_symlink():
                skipped.append(Skip(str(base / d), "link to a folder: not followed"))
        for name in sorted(filenames):
            path = base / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored += 1
                continue
            st = _regular_file_stat(path, root, skipped)
            if st is None:
                continue
            rel = path.relative_to(root).as_posix()
            candidates.append((f"folder:{rel}", path, _fingerprint(st)))
            if len(candidates) > max_items:
                raise InputError(f"{root} holds more than {max_items} images; index a smaller folder")

    items = _decoded_items(candidates, before, root, skipped, progress)
    return items, skipped, ignored


class _PerHome(dict):
    """Galleries held in memory by name, per home: names repeat across homes (tests, a changed XMODAL_HOME)."""

    @staticmethod
    def _key(name: str) -> tuple[str, str]:
        return str(paths.home()), name

    def get(self, name, default=None):
        return super().get(self._key(name), default)

    def __contains__(self, name) -> bool:
        return super().__contains__(self._key(name))

    def __getitem__(self, name) -> Gallery:
        return super().__getitem__(self._key(name))

    def __setitem__(self, name, gallery: Gallery) -> None:
        super().__setitem__(self._key(name), gallery)

    def setdefault(self, name, gallery: Gallery) -> Gallery:
        return super().setdefault(self._key(name), gallery)


_galleries: _PerHome = _PerHome()
_registry_lock = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}


def _build_lock(name: str) -> threading.Lock:
    with _registry_lock:
        return _build_locks.setdefault(name, threading.Lock())


def _cached_embed(encoder_name: str, modality: str) -> tuple[str, EmbedFn]:
    """(cache key, embed function) through the shared frozen-feature cache, so features computed
    for training (or by another gallery) are reused and the ones computed here are shared."""
    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import Record

    cache = FeatureCache(encoder_name)

    def embed(items: Sequence[GalleryItem]) -> np.ndarray:
        if modality == "image":
            records = [Record(id=it.id, image=it.image) for it in items]
        else:
            records = [Record(id=it.id, text=it.text) for it in items]
        return cache.get(records, modality)

    return f"{modality}:{cache.encoder.weights_id}", embed


def image_embed_fn(encoder_name: str = "efficientnet-lite0") -> tuple[str, EmbedFn]:
    """(cache key, embed function) for a registered image tower over gallery items."""
    return _cached_embed(encoder_name, "image")


def text_embed_fn(encoder_name: str = "minilm") -> tuple[str, EmbedFn]:
    """(cache key, embed function) for a text tower over gallery captions (`GalleryItem.text`)."""
    return _cached_embed(encoder_name, "text")


def index_folder(folder: str | Path, *, encoder_name: str | None = "efficientnet-lite0",
                 progress: Progress | None = None, max_items: int = MAX_ITEMS) -> tuple[Gallery, IndexReport]:
    """Index (or re-index) a folder of images as a gallery.

    Scans the folder (see `scan_folder`), compares with the last index of the same folder,
    and embeds only new or changed images with `encoder_name` (None: scan only).
    `progress(done, total)` runs over the scan, then over the encoding.

    Raises:
        InputError: the folder is missing, not a folder, unreadable, has no readable image,
            has more than `max_items` images, or may not be indexed (`check_index_folder`).
    """
    start = time.perf_counter()
    if not str(folder).strip():
        raise InputError("no folder given: type the path of a folder of images")
    from xmodal_core.validate import check_path_text

    given = check_path_text(folder, "folder")
    if not given.is_dir():
        scan_folder(given, max_items=max_items)  # says what is wrong with it
    root = check_index_folder(given)
    name = folder_gallery_name(root)
    with _build_lock(name):
        try:
            old = _galleries.get(name) or Gallery.load(name)
        except XmodalError:
            old = None
        previous = old.items if old is not None else []
        items, skipped, ignored = scan_folder(root, previous=previous, max_items=max_items, progress=progress)
        if not items:
            detail = f" ({len(skipped)} unreadable: {skipped[0].path}: {skipped[0].reason})" if skipped else ""
            raise InputError(f"no readable images in {root.resolve()}{detail}; "
                             "supported: PNG, JPEG, GIF, BMP, WebP, TIFF")
        before = {it.id: it.fingerprint for it in previous}
        now = {it.id for it in items}
        report = IndexReport(gallery=name, items=len(items), ignored=ignored, skipped=list(skipped))
        report.added = sum(1 for it in items if it.id not in before)
        report.changed = sum(1 for it in items if it.id in before and before[it.id] != it.fingerprint)
        report.unchanged = len(items) - report.added - report.changed
        report.removed = sum(1 for i in before if i not in now)
        gallery = Gallery(name, items, kind="folder", root=str(root.resolve()), title=f"folder {root.resolve()}",
                          skipped=skipped)
        gallery.save()
        if encoder_name:
            key, embed = image_embed_fn(encoder_name)
            done_before = {"n": 0}

            def counting(items_):
                done_before["n"] += len(items_)
                return embed(items_)

            gallery.index(key, counting, progress=progress)
            report.encoded = done_before["n"]
            report.skipped = list(gallery.skipped)
        with _registry_lock:
            _galleries[name] = gallery
        report.seconds = time.perf_counter() - start
        return gallery, report


def set_gallery(name: str, sets: Sequence[str], title: str, *, progress: Progress | None = None,
                build: bool = True) -> Gallery:
    """A gallery of every image of built data sets, with its caption (the set's text).

    Builds a missing set first when `build` (about a minute for Tux Paint on a laptop).
    """
    from xmodal_core.data import ensure_dataset, load_manifest

    with _build_lock(name):
        with _registry_lock:
            if name in _galleries:
                return _galleries[name]
        items: list[GalleryItem] = []
        for set_name in sets:
            records = load_manifest(ensure_dataset(set_name, progress=progress) if build else set_name)
            for r in records:
                if r.image is None:
                    continue
                try:
                    st = os.stat(r.image)
                except OSError:
                    continue  # a file removed since the build: leave it out
                items.append(GalleryItem(id=r.id, image=r.image, caption=r.text, label=r.label, dataset=set_name,
                                         source=r.source, fingerprint=_fingerprint(st)))
        gallery = Gallery(name, items, kind="default", title=title)
        gallery.save()
        with _registry_lock:
            _galleries[name] = gallery
        return gallery


def default_gallery(*, progress: Progress | None = None, build: bool = True) -> Gallery:
    """Tux Paint stamps + emoji: every image with its caption, from the built manifests."""
    return set_gallery(DEFAULT_NAME, DEFAULT_SETS, SET_GALLERIES[DEFAULT_NAME][1], progress=progress, build=build)


def recordings_gallery() -> Gallery:
    """Spoken captions by people (Tux Paint descriptions, ktuberling words, LibriVox sentences),
    from whichever of those sets are built; each item's `audio` is the recording, `image` its
    picture when the set has one, `caption` what was said."""
    from xmodal_core.data import load_manifest

    with _build_lock(RECORDINGS_NAME):
        with _registry_lock:
            if RECORDINGS_NAME in _galleries:
                return _galleries[RECORDINGS_NAME]
        items: list[GalleryItem] = []
        for set_name in RECORDING_SETS:
            try:
                records = load_manifest(set_name)
            except DatasetError:
                continue  # not built here: the other sets still make a collection
            for r in records:
                if r.audio is None:
                    continue
                try:
                    st = os.stat(r.audio)
                except OSError:
                    continue
                items.append(GalleryItem(id=r.id, image=r.image or "", caption=r.text, label=r.label,
                                         dataset=set_name, source=r.source, fingerprint=_fingerprint(st),
                                         audio=r.audio))
        if not items:
            raise DatasetError("no spoken captions are built yet: `xmodal data build tuxpaint` (or ktuberling, "
                               "librivox) first")
        gallery = Gallery(RECORDINGS_NAME, items, kind="recordings", title="spoken captions by people")
        with _registry_lock:
            _galleries[RECORDINGS_NAME] = gallery
        return gallery


def open_gallery(name: str, *, progress: Progress | None = None) -> Gallery:
    """A gallery by name: "default", "recordings", or one made by `index_folder` (loaded once)."""
    from xmodal_core.validate import check_name

    name = check_name(name, "gallery name")  # never a path: `--gallery /etc/passwd`
    if name in SET_GALLERIES:
        return set_gallery(name, *SET_GALLERIES[name], progress=progress)
    if name == RECORDINGS_NAME:
        return recordings_gallery()
    with _registry_lock:
        if name in _galleries:
            return _galleries[name]
    gallery = Gallery.load(name)
    with _registry_lock:
        return _galleries.setdefault(name, gallery)


def list_galleries() -> list[tuple[str, str]]:
    """(name, title) of the data-set galleries (default, ktuberling) and every indexed folder, default first."""
    out = [(name, title) for name, (_, title) in SET_GALLERIES.items()]
    for folder in sorted(galleries_dir().iterdir()):
        if folder.name in SET_GALLERIES or not (folder / META_NAME).is_file():
            continue
        try:
            title = json.loads((folder / META_NAME).read_text(encoding="utf-8")).get("title") or folder.name
        except (OSError, ValueError):
            continue
        out.append((folder.name, title))
    return out


def forget_loaded() -> None:
    """Drop galleries held in memory (tests; a changed XMODAL_HOME)."""
    with _registry_lock:
        _galleries.clear()


# ---------------------------------------------------------------- thumbnails

_thumb_cache: dict[tuple[str, str, int], object] = {}
_thumb_lock = threading.Lock()


def thumbnail(path: str | Path, size: int = THUMB_SIZE):
    """An RGB PIL thumbnail (longest side `size` pixels), cached in memory by file state."""
    from PIL import Image

    from xmodal_core.images import load_image

    path = str(path)
    try:
        fp = _fingerprint(os.stat(path))
    except OSError:
        fp = ""
    key = (path, fp, size)
    with _thumb_lock:
        hit = _thumb_cache.get(key)
    if hit is not None:
        return hit
    img = load_image(path)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    with _thumb_lock:
        if len(_thumb_cache) > 4096:
            _thumb_cache.clear()
        _thumb_cache[key] = img
    return img


def thumbnails_dir() -> Path:
    return paths.home() / "thumbs"


def thumbnail_file(path: str | Path, size: int = THUMB_SIZE) -> str:
    """The thumbnail as a WebP file under `thumbnails_dir()`, named by the source file's state and
    written once (atomically): what the app hands the browser. Gradio rewrites the cache file of a
    PIL result on every response, so two people shown the same picture at once could be sent a
    file while it is being rewritten (a truncated response); a file path is copied once instead."""
    import io

    path = str(path)
    try:
        fp = _fingerprint(os.stat(path))
    except OSError:
        fp = ""
    key = hashlib.sha1(f"{path}\x00{fp}\x00{size}".encode("utf-8", "surrogatepass")).hexdigest()
    out = thumbnails_dir() / key[:2] / f"{key}.webp"
    if not out.is_file():
        buf = io.BytesIO()
        thumbnail(path, size).save(buf, format="WEBP", quality=85)
        atomic_write(out, buf.getvalue())
    return str(out)


def thumbnail_data_uri(path: str | Path, size: int = 64) -> str:
    """A small WebP thumbnail as a `data:` URI (for hover previews in plots); "" when unreadable."""
    try:
        img = thumbnail(path, size)
    except XmodalError:
        return ""
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=70)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
