"""What a gallery names: the vocabulary a speech head is adapted to.

An entry is one thing a person may say to find an item: a stamp's name ("frog"), an emoji's
name, a caption, a file stem, a label. `entry_of` normalises a caption to the words a person
says for it ("A frog." -> "frog"; case and trailing punctuation dropped), so the caption, the
stem and the label of one picture collapse into one entry; `spoken_forms` keeps the caption as
written too, because people read it with its article.

    vocab = gallery_vocabulary(open_gallery("default"))   # base vocabulary + the gallery's names
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from xmodal_core.data.builders import DIGIT_WORDS
from xmodal_core.errors import InputError

__all__ = ["DIGIT_WORDS", "NUMBER_WORDS", "Entry", "Vocabulary", "VocabularyBuilder", "base_vocabulary",
           "entry_of", "gallery_vocabulary", "speakable", "stem_words"]

MAX_ENTRY_CHARS = 120    # longer captions are cut at a word boundary: a person does not say a paragraph
MAX_ENTRY_WORDS = 16
MAX_ENTRIES = 20_000
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_STEM_NOISE = re.compile(r"[_\-.]+|(?<=[a-z])(?=[A-Z])")
_TRAILING_NUMBER = re.compile(r"\s*\d+$")

NUMBER_WORDS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand",
)


@dataclass(frozen=True)
class Entry:
    """One vocabulary entry.

    Attributes:
        text: what the speech embedding should land on (normalised: "frog").
        forms: how people say it, the first being `text` ("frog", "a frog").
        source: where it came from ("tuxpaint", "emoji", "glyphs", "numbers", "caption", "stem", ...).
    """

    text: str
    forms: tuple[str, ...]
    source: str


@dataclass
class Vocabulary:
    """Entries in a stable order, plus what was left out and why."""

    entries: list[Entry] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (text, reason)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.entries]

    def digest(self) -> str:
        blob = json.dumps([[e.text, list(e.forms)] for e in self.entries], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.source] = out.get(e.source, 0) + 1
        return out


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    return _SPACES.sub(" ", text).strip()


def _cut(text: str) -> str:
    words = text.split(" ")[:MAX_ENTRY_WORDS]
    out = " ".join(words)
    if len(out) > MAX_ENTRY_CHARS:
        out = out[:MAX_ENTRY_CHARS].rsplit(" ", 1)[0]
    return out


def entry_of(text: str) -> str:
    """The words a person says for a caption or name: "An Adelaide Rosella." -> "adelaide rosella"."""
    text = _cut(_clean(text)).rstrip(".!?;:, ")
    return _ARTICLE.sub("", text).strip().lower()


def spoken_form(text: str) -> str:
    """A caption as said in full: "A Frog." -> "a frog" (`entry_of` also drops the article)."""
    return _cut(_clean(text)).rstrip(".!?;:, ").lower()


def item_forms(caption: str | None) -> set[str]:
    """The forms a person may say for a captioned item: its entry and its caption as written."""
    if not isinstance(caption, str) or not caption.strip():
        return set()
    return {f for f in (entry_of(caption), spoken_form(caption)) if f}


def stem_words(stem: str) -> str:
    """A file or folder name as words: "red_fox-2" -> "red fox", "BigCat" -> "big cat"."""
    words = _STEM_NOISE.sub(" ", stem)
    return _TRAILING_NUMBER.sub("", _SPACES.sub(" ", words)).strip().lower()


def speakable(text: str) -> bool:
    """True when the text has letters or digits a Latin-script English voice can say."""
    latin = sum(1 for ch in text if ch.isascii() and ch.isalnum())
    return latin > 0 and latin >= 0.5 * sum(1 for ch in text if ch.isalnum())


class VocabularyBuilder:
    """Collects entries from several sources; the first source of an entry names it."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self.dropped: list[tuple[str, str]] = []

    def add(self, text: str | None, source: str, *, form: str | None = None) -> None:
        """Add `text` (a caption, name, label or stem); `form` is how it is written when said in full."""
        if not isinstance(text, str) or not text.strip():
            return
        entry = entry_of(text)
        if not entry:
            return
        if not speakable(entry):
            self.dropped.append((text[:80], "no installed English voice can say it (no Latin letters or digits)"))
            return
        spoken = spoken_form(form or text)
        old = self._entries.get(entry)
        if old is None:
            if len(self._entries) >= MAX_ENTRIES:
                self.dropped.append((text[:80], f"the vocabulary is full ({MAX_ENTRIES} entries)"))
                return
            forms = (entry,) if spoken == entry or not speakable(spoken) else (entry, spoken)
            self._entries[entry] = Entry(entry, forms, source)
        elif spoken not in old.forms and speakable(spoken) and len(old.forms) < 3:
            self._entries[entry] = Entry(old.text, old.forms + (spoken,), old.source)

    def add_all(self, texts: Iterable[str | None], source: str) -> None:
        for t in texts:
            self.add(t, source)

    def build(self) -> Vocabulary:
        entries = sorted(self._entries.values(), key=lambda e: (e.source, e.text))
        return Vocabulary(entries, list(self.dropped))


def base_vocabulary(builder: VocabularyBuilder | None = None) -> VocabularyBuilder:
    """Everything the default galleries and the training images name: Tux Paint stamps (all of them:
    their names are known to anyone who installs Tux Paint), emoji names, the glyphs' letters, digits
    and signs, digit and number words."""
    from xmodal_core.data import ensure_dataset, load_manifest

    b = builder or VocabularyBuilder()
    for word in DIGIT_WORDS + NUMBER_WORDS:
        b.add(word, "numbers")
    for set_name in ("tuxpaint", "emoji", "glyphs"):
        for r in load_manifest(ensure_dataset(set_name)):
            if r.image is not None:
                b.add(r.text, set_name)
    return b


def gallery_vocabulary(gallery, *, base: bool = True, labels: Sequence[str] = ()) -> Vocabulary:
    """The vocabulary of a gallery: the base vocabulary (when `base`), then each item's caption,
    file stem, folder name and label, then `labels` (accepted labels, class names of labelled sets).

    Raises:
        InputError: nothing in the gallery can be said (an empty vocabulary).
    """
    from pathlib import PurePath

    b = base_vocabulary() if base else VocabularyBuilder()
    for it in gallery.items:
        b.add(it.caption, "caption")
        if gallery.kind == "folder" and it.image:
            p = PurePath(it.image)
            b.add(stem_words(p.stem), "stem")
            b.add(stem_words(p.parent.name), "folder")
        if it.label and "/" not in it.label:
            b.add(it.label.replace("_", " "), "label")
    b.add_all(labels, "label")
    vocab = b.build()
    if not vocab.entries:
        why = f" ({len(vocab.dropped)} names no installed voice can say)" if vocab.dropped else ""
        raise InputError(f"gallery {gallery.name} names nothing that can be spoken{why}: give its images captions "
                         "(Label page) or file names made of words, then adapt again")
    return vocab
