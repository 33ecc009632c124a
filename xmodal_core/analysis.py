"""What the Explorer and Templates pages compute: embeddings of labelled sets under a chosen
model, 2-D maps, class-grouped cosine heatmaps, retrieval probes (direct vs ASIF, modality
gap) and zero-shot accuracy against the number of templates.

A model is named by a key, and every key is a `spaces.Space` (`space_for`), the one thing
that embeds:
- "pretrained": the towers as installed (Whisper, MiniLM, EfficientNet), before alignment;
- "cascade": speech -> Whisper transcript -> MiniLM, text -> MiniLM (no training);
- "in-use": the model in use (`spaces.current_space()`);
- "run:ID": one completed alignment run on its own.

Frozen-tower features come from the shared feature cache, so a head on top costs milliseconds.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from xmodal_core.errors import DatasetError, InputError
from xmodal_core.spaces import PRETRAINED
MARKERS = {"speech": "circle", "text": "x", "image": "square"}
# Limits so one person's map or evaluation cannot hold the shared CPU for minutes.
MAX_PER_CLASS = 500  # the pages offer up to 100; benchmarks map 500 per class
MAX_MAP_POINTS = 6000  # items x modalities on one t-SNE / UMAP map
MAX_MODELS = 8  # models compared in one zero-shot evaluation

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LabelledSet:
    """A data set with classes: which manifest, which views it has, how a record's class is named."""

    name: str
    title: str
    manifest: str
    modalities: tuple[str, ...]
    zero_shot: str | None  # the modality zero-shot classifies (None: not a zero-shot set)

    def class_of(self, record) -> str | None:
        label = record.label
        if label is None:
            return None
        if self.name == "tuxpaint":
            top = label.split("/")[0]
            return {"naturalforces": "natural forces"}.get(top, top)
        return label


SETS: dict[str, LabelledSet] = {s.name: s for s in (
    LabelledSet("fsdd", "FSDD spoken digits (people)", "fsdd", ("speech", "text"), "speech"),
    LabelledSet("fashion-mnist", "Fashion-MNIST", "fashion-mnist", ("image", "text"), "image"),
    LabelledSet("tuxpaint", "Tux Paint stamps (categories)", "tuxpaint", ("image", "text", "speech"), "image"),
    LabelledSet("tuxpaint-tts", "Tux Paint, synthetic speech", "tuxpaint-tts", ("speech", "image", "text"), "speech"),
    LabelledSet("emoji", "Emoji", "emoji", ("image", "text"), None),
    LabelledSet("ktuberling", "ktuberling spoken words (people)", "ktuberling", ("speech", "image", "text"), "speech"),
)}


def get_set(name: str) -> LabelledSet:
    if name not in SETS:
        raise InputError(f"unknown set {name!r}; choose one of {', '.join(SETS)}")
    return SETS[name]


def zero_shot_sets() -> list[LabelledSet]:
    return [s for s in SETS.values() if s.zero_shot]


def sample(set_name: str, modalities: Sequence[str], per_class: int, *, classes: Sequence[str] | None = None,
           seed: int = 0, split: str | None = None, max_per_class: int | None = MAX_PER_CLASS) -> list:
    """Up to `per_class` records of each class that have every modality, in class order.
    `max_per_class` bounds what a page may ask for; offline experiments pass None.

    Raises:
        DatasetError: the set is not built (with the command that builds it) or has no such records.
    """
    from xmodal_core.data import ensure_dataset, load_manifest

    spec = get_set(set_name)
    if per_class < 1 or (max_per_class is not None and per_class > max_per_class):
        raise InputError(f"items per class must be between 1 and {max_per_class}, not {per_class}")
    bad = [m for m in modalities if m not in spec.modalities]
    if bad:
        raise InputError(f"{spec.title} has no {', '.join(bad)}; it has {', '.join(spec.modalities)}")
    records = load_manifest(ensure_dataset(spec.manifest), split=split)
    by_class: dict[str, list] = defaultdict(list)
    for r in records:
        c = spec.class_of(r)
        if c is not None and all(r.item(m) is not None for m in modalities):
            by_class[c].append(r)
    wanted = sorted(by_class) if not classes else [c for c in classes if c in by_class]
    if classes:
        missing = [c for c in classes if c not in by_class]
        if missing:
            raise InputError(f"{spec.title} has no {' / '.join(modalities)} records of class "
                             f"{', '.join(map(repr, missing))}")
    rng = random.Random(seed)
    out = []
    for c in wanted:
        items = list(by_class[c])
        rng.shuffle(items)
        out.extend(sorted(items[:per_class], key=lambda r: r.id))
    if not out:
        raise DatasetError(f"{spec.title} has no records with {' and '.join(modalities)}")
    return out


def classes_of(set_name: str) -> list[str]:
    """Every class name of a set (built first when missing), sorted."""
    from xmodal_core.data import ensure_dataset, load_manifest

    spec = get_set(set_name)
    return sorted({c for c in (spec.class_of(r) for r in load_manifest(ensure_dataset(spec.manifest))) if c is not None})


# ---------------------------------------------------------------- models

def model_choices(modalities: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(title, key) of every model that can embed all of `modalities`."""
    from xmodal_core import spaces

    need = set(modalities)
    out = [("pretrained towers (before alignment)", "pretrained")]
    if not need - {"speech", "text"}:
        out.append(("cascade: Whisper transcript → MiniLM (untrained)", "cascade"))
    current = spaces.current_space()
    if all(current.can(m) for m in need):
        speech = f"run {current.speech_run}" if current.speech_run is not None else "cascade"
        image = f"run {current.image_run}" if current.image_run is not None else "none"
        out.append((f"model in use (speech: {speech}, images: {image})", "in-use"))
    for run in spaces.usable_runs():
        if need <= set(run.towers) | ({"text"} if run.shared else set()):
            out.append((run.title, f"run:{run.run_id}"))
    return out


def space_for(model: str):
    """The `spaces.Space` a model key names (see the module doc)."""
    from xmodal_core import spaces

    if model == "pretrained":
        return spaces.Space.pretrained_towers()
    if model == "cascade":
        return spaces.Space()
    if model == "in-use":
        return spaces.current_space()
    if model.startswith("run:") and model[4:].isdigit():
        return spaces.Space(own_run=int(model[4:]))  # the run on its own, every tower (text included) through it
    raise InputError(f"unknown model {model!r}; use pretrained, cascade, in-use or run:ID")


def embed_records(model: str, modality: str, records: Sequence, progress: Progress | None = None) -> np.ndarray:
    """(N, d) unit embeddings of the records' `modality` view under `model` (see the module doc)."""
    return space_for(model).embed_records(modality, records, progress)


def _check_one_space(model: str, modalities: Sequence[str]) -> None:
    """Refuse, before any encoding, views that are different widths under the pretrained towers."""
    if model != "pretrained" or len(set(modalities)) < 2:
        return
    from xmodal_core.registry import REGISTERED

    widths = {m: REGISTERED[PRETRAINED[m]].dim for m in modalities}
    if len(set(widths.values())) > 1:
        shown = ", ".join(f"{m} {w}-d" for m, w in widths.items())
        raise InputError(f"before alignment these views are different spaces ({shown}): pick a trained model, "
                         "or one modality at a time")


def model_title(model: str) -> str:
    for title, key in model_choices():
        if key == model:
            return title
    return model


# ---------------------------------------------------------------- map

@dataclass
class MapData:
    """Points of a map: one per (record, modality)."""

    coords: np.ndarray  # (P, 2)
    modality: list[str]
    cls: list[str]
    hover: list[str]
    thumbs: list[str]  # data: URIs ("" where none)
    method: str
    cached: bool
    seconds: float
    notes: list[str] = field(default_factory=list)


def embedding_map(set_name: str, model: str, modalities: Sequence[str], method: str = "tsne", *,
                  per_class: int = 20, classes: Sequence[str] | None = None, seed: int = 0,
                  progress: Progress | None = None, thumbnails: bool = True) -> MapData:
    """t-SNE / UMAP / PCA of the chosen modalities of a balanced sample, computed jointly (one space).

    Raises:
        InputError: modalities of different widths under `model` (e.g. pretrained images,
            1280-d, with text, 384-d): they are not one space before alignment.
    """
    from xmodal_core.gallery import thumbnail_data_uri
    from xmodal_core.projection import project

    modalities = list(dict.fromkeys(modalities))
    if not modalities:
        raise InputError("pick at least one modality to map")
    _check_one_space(model, modalities)
    records = sample(set_name, modalities, per_class, classes=classes, seed=seed)
    if len(records) * len(modalities) > MAX_MAP_POINTS:
        raise InputError(f"the map would have {len(records) * len(modalities)} points; the limit is {MAX_MAP_POINTS}: "
                         "pick fewer items per class, classes or modalities")
    spec = get_set(set_name)
    blocks, mods, cls, hover, thumbs = [], [], [], [], []
    for m in modalities:
        blocks.append(embed_records(model, m, records))
        for r in records:
            mods.append(m)
            cls.append(spec.class_of(r))
            what = {"speech": "🔊", "text": "✎", "image": "🖼"}[m]
            hover.append(f"{what} {m} · {spec.class_of(r)}<br>{(r.text or r.id)[:80]}")
            thumbs.append(thumbnail_data_uri(r.image, 72) if thumbnails and r.image else "")
    dims = {b.shape[1] for b in blocks}
    if len(dims) > 1:
        widths = ", ".join(f"{m} {b.shape[1]}-d" for m, b in zip(modalities, blocks))
        raise InputError(f"under {model_title(model)} these views are different spaces ({widths}): a joint map "
                         "needs one space — pick a trained model, or map one modality at a time")
    proj = project(np.concatenate(blocks), method, seed=seed, progress=progress)
    notes = list(proj.notes)
    if model == "pretrained" and len(modalities) > 1:
        notes.append("pretrained towers were never aligned: expect one island per modality (the modality gap)")
    return MapData(proj.coords, mods, cls, hover, thumbs, method, proj.cached, proj.seconds, notes)


# ---------------------------------------------------------------- heatmap

def heatmap(set_name: str, model: str, row_modality: str, col_modality: str, classes: Sequence[str], *,
            per_class: int = 10, seed: int = 0):
    """`metrics.Heatmap` of cosine(row view, column view) over a sample of the chosen classes."""
    from xmodal_core.metrics import similarity_heatmap

    if row_modality == col_modality:
        raise InputError("pick two different modalities (e.g. speech vs text)")
    if not classes:
        raise InputError("pick at least one class for the heatmap")
    _check_one_space(model, [row_modality, col_modality])
    records = sample(set_name, [row_modality, col_modality], per_class, classes=classes, seed=seed)
    spec = get_set(set_name)
    a = embed_records(model, row_modality, records)
    b = embed_records(model, col_modality, records)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"under {model_title(model)} {row_modality} is {a.shape[1]}-d and {col_modality} "
                         f"{b.shape[1]}-d: no cosine between them before alignment; pick a trained model")
    labels = [spec.class_of(r) for r in records]
    return similarity_heatmap(a, b, labels, labels, classes=list(classes))


# ---------------------------------------------------------------- probes

@dataclass
class ProbeRow:
    model: str
    direct: str
    asif: str
    gap: str
    pairs: int
    anchors: int
    queries: int
    k: int
    p: float
    chance: float


def probe(set_name: str, model: str, a_modality: str, b_modality: str, *, n_pairs: int = 400, n_anchors: int = 300,
          n_queries: int = 50, k: int = 30, p: float = 8.0, trials: int = 20, seed: int = 0) -> ProbeRow:
    """Direct-cosine and ASIF retrieval probes a -> b (Maestro analysis) and the modality gap."""
    from xmodal_core.data import ensure_dataset, load_manifest
    from xmodal_core.metrics import modality_gap, retrieval_probe

    spec = get_set(set_name)
    records = [r for r in load_manifest(ensure_dataset(spec.manifest))
               if r.item(a_modality) is not None and r.item(b_modality) is not None]
    if len(records) < 4:
        raise DatasetError(f"{spec.title} has {len(records)} {a_modality}/{b_modality} pairs; a probe needs 4")
    rng = random.Random(seed)
    if len(records) > n_pairs:
        records = rng.sample(records, n_pairs)
    a = embed_records(model, a_modality, records)
    b = embed_records(model, b_modality, records)
    res = retrieval_probe(a, b, trials=int(trials), n_anchors=int(n_anchors), n_queries=int(n_queries), k=int(k),
                          p=float(p), seed=seed)
    gap = f"{modality_gap(a, b):.3f}" if a.shape[1] == b.shape[1] else "n/a (different widths)"
    direct = (f"{res.direct_mean:.3f} ± {res.direct_std:.3f}" if res.direct_mean is not None
              else "n/a (different widths)")
    return ProbeRow(model_title(model), direct, f"{res.asif_mean:.3f} ± {res.asif_std:.3f}", gap, len(records),
                    res.n_anchors, res.n_queries, res.k, res.p, res.chance)


# ---------------------------------------------------------------- zero-shot

@dataclass
class ZeroShotCurve:
    model: str
    title: str
    loss: str  # "cl", "cwcl", ..., or "untrained"
    ks: list[int]
    top1: list[float]


def zero_shot_curves(set_name: str, models: Sequence[str], templates: Sequence[str], *, per_class: int = 20,
                     seed: int = 0, progress: Progress | None = None) -> list[ZeroShotCurve]:
    """Zero-shot top-1 of each model when the first k templates build the class embeddings, k = 1 .. n.

    Raises:
        InputError: a model that cannot embed the set's modality, a malformed template (by line).
    """
    import torch

    from xmodal_core import spaces
    from xmodal_core.evaluate import template_curve
    from xmodal_core.zeroshot import parse_templates

    spec = get_set(set_name)
    if spec.zero_shot is None:
        raise InputError(f"{spec.title} has no classes for zero-shot classification")
    templates = parse_templates(list(templates) if not isinstance(templates, str) else templates)
    if not models:
        raise InputError("pick at least one model")
    if len(models) > MAX_MODELS:
        raise InputError(f"{len(models)} models picked; compare at most {MAX_MODELS} at once")
    modality = spec.zero_shot
    records = sample(set_name, [modality], per_class, seed=seed)
    names = sorted({spec.class_of(r) for r in records})
    labels = [names.index(spec.class_of(r)) for r in records]
    runs = {f"run:{r.run_id}": r for r in spaces.usable_runs()}
    out = []
    for n, model in enumerate(models):
        if progress is not None:
            progress(n, len(models))
        emb = torch.from_numpy(embed_records(model, modality, records))

        def encode_text(texts: list[str], _model=model) -> np.ndarray:
            from xmodal_core.data.manifest import Record

            recs = [Record(id=f"t{i}", text=t) for i, t in enumerate(texts)]
            return embed_records(_model if _model.startswith("run:") else "cascade", "text", recs)

        curve = template_curve(emb, labels, names, templates, encode_text)
        loss = runs[model].loss if model in runs else ("untrained" if model in ("cascade", "pretrained") else "in use")
        out.append(ZeroShotCurve(model, model_title(model), loss, curve.ks, curve.top1))
    if progress is not None:
        progress(len(models), len(models))
    return out
