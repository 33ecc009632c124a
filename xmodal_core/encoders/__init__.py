"""Encoder towers behind one interface (`Encoder`); build them through `xmodal_core.registry`."""
from xmodal_core.encoders.base import Encoder, Modality

__all__ = ["Encoder", "Modality"]
