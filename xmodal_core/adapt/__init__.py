"""Spoken vocabulary adaptation: the speech head learns the names a gallery uses, from synthetic voices.

- `vocabulary`: what a gallery names (captions, names, file stems, labels) plus the base vocabulary.
- `speech`: each name said by many synthetic voices through simulated microphones and rooms
  (clips cached by content).
- `core`: `adapt(gallery)` (a training run in the store), the per-gallery state, and the
  confidence threshold `auto` search uses.
"""
from xmodal_core.adapt.core import (AdaptConfig, AdaptReport, AdaptState, adapt, base_state, general_words,
                                    load_state, save_state)
from xmodal_core.adapt.vocabulary import Entry, Vocabulary, gallery_vocabulary

__all__ = ["AdaptConfig", "AdaptReport", "AdaptState", "Entry", "Vocabulary", "adapt", "base_state",
           "gallery_vocabulary", "general_words", "load_state", "save_state"]
