"""xmodal: align speech, images and text in one embedding space (the library; no UI code here)."""
import os

# No model hub is reachable from the machines xmodal runs on; never try (set HF_HUB_OFFLINE=0 to allow it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
