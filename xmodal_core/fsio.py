"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every writer of a cache, manifest, model file or result in xmodal goes through `atomic_path`
(a temporary file beside the target, renamed over it on success, deleted on failure), so an
interrupted process or two processes writing the same file at once never leave a torn file.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path` (same folder, same extension); when the block ends
    without an exception, rename it over `path`, else delete it. Parent folders are created.

    The temporary name is unique per call, so concurrent writers of one target do not collide;
    the last rename wins. `mode` (less the umask) replaces mkstemp's 0600, so caches stay shareable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, *, encoding: str = "utf-8", fsync: bool = False) -> Path:
    """Write `data` (bytes, or text in `encoding`) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data.encode(encoding) if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """`json.dumps(obj)` (plus a final newline when indented) written to `path` atomically."""
    text = json.dumps(obj, indent=indent, **dumps)
    return atomic_write(path, text + "\n" if indent is not None else text)
