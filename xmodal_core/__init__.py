"""xmodal: align speech, images and text in one embedding space (the library; no UI code here).

The public API (see README "Python API"):

    import xmodal_core as xm
    model = xm.load("xmodal-default")          # or a run id, a run folder, a tower name ("minilm")
    model.encode_text(["a red apple"])         # (N, d) unit-norm float32, as are encode_speech / encode_image
    xm.search("a red apple", k=5)              # a search.SearchResult, as the app's Search page
    xm.zeroshot(["clip.wav"], ["yes", "no"])   # an api.ZeroShot

Importing the package is cheap: everything loads on first use.
"""
import os
import sys

# No model hub is reachable from the machines xmodal runs on; never try (set HF_HUB_OFFLINE=0 to allow it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# numpy's OpenBLAS threads spin after every call and take the cores from torch's next op: on 2 cores
# that made a spoken query's Whisper pass 2-3x slower inside a search (15 -> 40 ms, bench/vgs.py).
# xmodal's numpy work is small; set OPENBLAS_NUM_THREADS to change it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "numpy" in sys.modules:  # loaded before xmodal_core: the variable comes too late, limit the pool itself
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")
    except (ImportError, ValueError):
        pass

__version__ = "0.1.0"
__all__ = ["Model", "ZeroShot", "load", "search", "zeroshot"]


def load(name="xmodal-default"):
    """A model by name (see `xmodal_core.api.load`): "xmodal-default", a run id, a run folder or a tower."""
    from xmodal_core.api import load as _load

    return _load(name)


def __getattr__(name):
    # `search` and `zeroshot` are submodules that can be called as functions (see api.callable_module);
    # importing them here on first use keeps `import xmodal_core` cheap.
    if name in ("search", "zeroshot"):
        import importlib

        return importlib.import_module(f"xmodal_core.{name}")
    if name in ("Model", "ZeroShot"):
        from xmodal_core import api

        return getattr(api, name)
    raise AttributeError(f"module 'xmodal_core' has no attribute {name!r}")
