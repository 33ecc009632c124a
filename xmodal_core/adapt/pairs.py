"""Speech-image pairs from adaptation: every captioned gallery item x the synthetic voices that
say its name, the training data of the shared-space FaST-VGS (`models.vgs.SharedVGS`).

A clip says one form of an entry ("a penguin" or "penguin"). Its pictures are the items whose
caption can be said that way (`vocabulary.item_forms`): "a penguin" is the Tux Paint stamp
captioned "A penguin.", "penguin" is that stamp and the emoji named "penguin". The fine scorer
hears the difference; the coarse one (the adapted head, one point per entry) cannot. When no
item carries the clip's exact form, every item of its entry is a positive.

Clips are the adaptation's own (`adapt.speech.plan_utterances`, same seeds and voices), so a
gallery that was adapted has them cached; training voices stay training voices, validation
clips come from the held-out voices only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from xmodal_core.errors import DatasetError


@dataclass
class SpeechImagePairs:
    """Clips of a gallery's names and the gallery items each shows.

    Attributes:
        item_ids: the gallery items that have a spoken name, in gallery order.
        records: one manifest `Record` per clip (audio path, text = the form said, group = entry,
            split "train" or "val").
        positives: per clip, the rows of `item_ids` it names (never empty).
        entries: per clip, its entry (the coarse loss's group).
    """

    gallery: str
    item_ids: list[str]
    records: list
    positives: list[list[int]]
    entries: list[str]

    def split(self, name: str) -> list[int]:
        return [i for i, r in enumerate(self.records) if r.split == name]


def gallery_pairs(gallery, *, voices: int = 10, val_voices: int = 1, config=None, progress=None
                  ) -> SpeechImagePairs:
    """The pairs of `gallery`: up to `voices` training voices and `val_voices` held-out voices per
    entry that some captioned item carries (clips synthesised when not cached yet).

    Raises:
        DatasetError: the gallery has no captioned item a voice can say, or no clip could be made.
    """
    from dataclasses import replace

    from xmodal_core.adapt.core import AdaptConfig, clip_records
    from xmodal_core.adapt.speech import plan_utterances, render_clips, voice_pools
    from xmodal_core.adapt.vocabulary import entry_of, gallery_vocabulary, item_forms

    cfg = config or AdaptConfig()
    forms_of: dict[str, set[str]] = {}
    items_of: dict[str, list[int]] = {}
    item_ids: list[str] = []
    for it in gallery.items:
        forms = item_forms(it.caption)
        if not forms:
            continue
        row = len(item_ids)
        item_ids.append(it.id)
        forms_of[it.id] = forms
        items_of.setdefault(entry_of(it.caption), []).append(row)
    vocab = gallery_vocabulary(gallery, base=False)
    entries = [e for e in vocab.entries if e.text in items_of]
    if not entries:
        raise DatasetError(f"gallery {gallery.name} has no captioned picture whose name a voice can say: "
                           "caption its pictures (Label page) first")
    plan_cfg = replace(cfg.plan_config(), voices=voices, val_voices=val_voices)
    plan = plan_utterances(entries, plan_cfg, voice_pools(cfg.engines))
    clips, errors = render_clips(plan, progress=progress)
    records = clip_records(plan, clips)
    kept = [u for u, p in zip(plan, clips) if p is not None]
    if not records:
        raise DatasetError(f"no clip of {gallery.name}'s names could be synthesised: {next(iter(errors.values()), '')}")
    positives = []
    for u in kept:
        rows = items_of[u.entry]
        exact = [r for r in rows if u.form in forms_of[item_ids[r]]]
        positives.append(exact or rows)
    records = [replace(r, text=u.form) for r, u in zip(records, kept)]
    return SpeechImagePairs(gallery.name, item_ids, records, positives, [u.entry for u in kept])


def positive_matrix(positives: Sequence[Sequence[int]], n_items: int):
    """(N, n_items) bool tensor from per-clip positive rows."""
    import torch

    out = torch.zeros(len(positives), n_items, dtype=torch.bool)
    for i, rows in enumerate(positives):
        out[i, list(rows)] = True
    return out
