"""Evaluation as a function of data: zero-shot classification, template robustness, retrieval.

In the manner of CLIP_benchmark, embeddings (or a function that embeds), labels, class names and
templates go in and a result dataclass comes out (`to_dict()` is JSON). Every zero-shot and
recall@k figure in xmodal goes through here: validation during training, the default model's
evaluation, the baselines, the experiments and the `xmodal zeroshot` command.

    result = zeroshot(speech_emb, labels, ["zero", "one", ...], ["{}"], encode_text, groups=speakers)
    result.top1, result.per_group["fsdd:lucas"], result.to_dict()
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from xmodal_core.errors import InputError
from xmodal_core.metrics import (  # group_positives: re-exported
    group_positives,
    recall_at_k,
    topk_accuracy,
)
from xmodal_core.zeroshot import (
    EncodeText,
    class_embeddings,
    classify,
    load_templates,
    parse_templates,
    template_robustness,
)

__all__ = [
    "ClassificationResult",
    "TemplateCurve",
    "RetrievalResult",
    "zeroshot",
    "classification",
    "template_curve",
    "retrieval",
    "recall",
    "group_positives",
    "parse_classes",
    "resolve_templates",
    "zeroshot_manifest",
]


# =============================================================================== results

@dataclass
class ClassificationResult:
    """Accuracy of one classifier on N labelled items over C classes.

    top1 / top5: fractions in [0, 1] (top5 is top-min(5, C); None when only a single prediction
    per item is known, e.g. an ASR cascade). per_class: top-1 per class name (classes with items
    only). per_group: top-1 per group (e.g. speaker), sorted by group. confusion[i][j]: items of
    class i predicted as class j. predictions: the top-1 class index per item; ranked / scores:
    the top-min(5, C) class indices and their scores per item (empty without scores).
    """

    n: int
    top1: float
    top5: float | None
    classes: list[str]
    templates: int = 0
    per_class: dict[str, float] = field(default_factory=dict)
    per_group: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    ranked: list[list[int]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the top-1 prediction of each item is its label."""
        return np.asarray(self.predictions) == np.asarray(self.labels)

    def top1_without(self, groups: Sequence[str]) -> float | None:
        """Top-1 over the items outside `groups` (None when no item or every item is left out)."""
        names = np.asarray(self.groups)
        keep = ~np.isin(names, list(groups)) if len(names) else np.zeros(0, dtype=bool)
        return float(self.correct[keep].mean()) if keep.any() and not keep.all() else None


@dataclass
class TemplateCurve:
    """Zero-shot accuracy when only the first k templates build the class embeddings (CWCL Table 3)."""

    ks: list[int]
    top1: list[float]
    top5: list[float]
    classes: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def at(self, k: int) -> float:
        """Top-1 with the first k templates."""
        return self.top1[self.ks.index(int(k))]


@dataclass
class RetrievalResult:
    """Recall@k of Q queries over a gallery of G items: `recall[k]` in [0, 1]."""

    queries: int
    gallery: int
    recall: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """{"{prefix}r@{k}": recall} in the order of the ks asked for."""
        return {f"{prefix}r@{k}": v for k, v in self.recall.items()}


# =============================================================================== classification

def _label_indices(labels: Sequence | Tensor, classes: Sequence[str]) -> Tensor:
    if isinstance(labels, Tensor):
        return labels.long().flatten()
    labels = list(labels)
    if labels and isinstance(labels[0], str):
        unknown = sorted({x for x in labels if x not in classes})
        if unknown:
            raise InputError(f"labels {unknown[:10]} are not among the classes ({', '.join(classes)})")
        return torch.tensor([list(classes).index(x) for x in labels], dtype=torch.long)
    return torch.as_tensor(np.asarray(labels, dtype=np.int64))


def _summarise(predicted: Tensor, targets: Tensor, classes: list[str], groups: Sequence[str] | None,
               top1: float, top5: float | None, templates: int = 0) -> ClassificationResult:
    c = len(classes)
    correct = (predicted == targets).numpy()
    confusion = torch.bincount(targets * c + predicted, minlength=c * c).reshape(c, c).tolist()
    per_class = {classes[i]: float(correct[(targets == i).numpy()].mean()) for i in range(c) if bool((targets == i).any())}
    group_list = [str(g) for g in groups] if groups is not None else []
    if groups is not None and len(group_list) != len(correct):
        raise InputError(f"{len(group_list)} groups for {len(correct)} items")
    names = np.array(group_list)
    per_group = {g: float(correct[names == g].mean()) for g in sorted(set(group_list))}
    return ClassificationResult(n=len(correct), top1=top1, top5=top5, classes=list(classes), templates=templates,
                                per_class=per_class, per_group=per_group, confusion=confusion,
                                labels=targets.tolist(), predictions=predicted.tolist(), groups=group_list)


def zeroshot(embeddings: Tensor | np.ndarray, labels: Sequence | Tensor, class_names: Sequence[str],
             templates: Sequence[str] | str | None = None, encode_text: EncodeText | None = None, *,
             class_emb: Tensor | None = None, groups: Sequence[str] | None = None) -> ClassificationResult:
    """Zero-shot classification by cosine to class embeddings.

    Args:
        embeddings: (N, d) item embeddings in the text space.
        labels: (N,) class indices into `class_names`, or the class names themselves.
        class_names: C names, put into each template's `{}`.
        templates: a template list, or a name `load_templates` knows (e.g. "simple:5").
        encode_text: list[str] -> (n, d); with `templates`, builds the class embeddings.
        class_emb: (C, d) class embeddings computed beforehand (instead of templates + encode_text).
        groups: (N,) a group per item (e.g. the speaker) for `per_group`.

    Returns:
        ClassificationResult with top-1/top-5, per class, per group, confusion counts and the
        top-min(5, C) classes and cosine scores of every item.
    """
    classes = [str(c) for c in class_names]
    if len(classes) < 2:
        raise InputError(f"zero-shot classification needs at least two classes; got {classes}")
    n_templates = 0
    if class_emb is None:
        if templates is None or encode_text is None:
            raise InputError("give class_emb, or templates and encode_text to build the class embeddings")
        template_list = load_templates(templates) if isinstance(templates, str) else parse_templates(list(templates))
        n_templates = len(template_list)
        class_emb = class_embeddings(classes, template_list, encode_text)
    emb = torch.as_tensor(embeddings)
    logits = classify(emb, class_emb)  # (N, C)
    targets = _label_indices(labels, classes).to(logits.device)
    acc = topk_accuracy(logits, targets, ks=(1, 5))
    scores, ranked = logits.topk(min(5, len(classes)), dim=1)
    result = _summarise(logits.argmax(1).cpu(), targets.cpu(), classes, groups, float(acc["top1"]),
                        float(acc["top5"]), n_templates)
    result.ranked = ranked.tolist()
    result.scores = scores.float().tolist()
    return result


def classification(predicted: Sequence[str] | Sequence[int], labels: Sequence | Tensor, class_names: Sequence[str],
                   *, groups: Sequence[str] | None = None) -> ClassificationResult:
    """Accuracy of given predictions (class names or indices), e.g. an ASR cascade's; no top-5."""
    classes = [str(c) for c in class_names]
    pred = _label_indices(predicted, classes)
    targets = _label_indices(labels, classes)
    if pred.shape != targets.shape or len(pred) == 0:
        raise InputError(f"{len(pred)} predictions for {len(targets)} labels; give one per item")
    top1 = float((pred == targets).numpy().mean())
    return _summarise(pred, targets, classes, groups, top1, None)


def template_curve(embeddings: Tensor | np.ndarray, labels: Sequence | Tensor, class_names: Sequence[str],
                   templates: Sequence[str] | str, encode_text: EncodeText,
                   ks: Sequence[int] | None = None) -> TemplateCurve:
    """Template robustness: zero-shot top-1/top-5 with the first k templates, for each k in `ks`
    (default every k = 1 .. T; ks beyond the list are skipped). Every string is encoded once."""
    classes = [str(c) for c in class_names]
    template_list = load_templates(templates) if isinstance(templates, str) else parse_templates(list(templates))
    emb = torch.as_tensor(embeddings)
    targets = _label_indices(labels, classes).to(emb.device)
    ks = range(1, len(template_list) + 1) if ks is None else ks
    table = template_robustness(emb, targets, classes, template_list, encode_text, ks=ks)
    order = list(table)
    return TemplateCurve(ks=order, top1=[float(table[k]["top1"]) for k in order],
                         top5=[float(table[k]["top5"]) for k in order], classes=len(classes), n=int(emb.shape[0]))


# =============================================================================== retrieval

def recall(sim: Tensor | np.ndarray, positives, ks: Sequence[int] = (1, 5, 10)) -> RetrievalResult:
    """Recall@k from a (Q, G) similarity matrix (higher is better) and the positives
    (see `metrics.recall_at_k`: a (Q, G) bool mask, Q index lists, or a (Q,) index vector)."""
    r = recall_at_k(sim, positives, ks)
    shape = tuple(sim.shape)
    return RetrievalResult(queries=int(shape[0]), gallery=int(shape[1]), recall={int(k): float(r[f"R@{k}"]) for k in ks})


def retrieval(queries: Tensor | np.ndarray, gallery: Tensor | np.ndarray, positives,
              ks: Sequence[int] = (1, 5, 10)) -> RetrievalResult:
    """Recall@k of (Q, d) query embeddings over (G, d) gallery embeddings by dot product (cosine
    for unit rows); `positives` as in `recall`."""
    q, g = torch.as_tensor(queries), torch.as_tensor(gallery)
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise InputError(f"queries (Q, d) and gallery (G, d) must share d; got {tuple(q.shape)} and {tuple(g.shape)}")
    return recall(q @ g.T, positives, ks)


# =============================================================================== label manifests

def parse_classes(text: str) -> list[str]:
    """Class names from comma-separated text; at least two, none twice."""
    classes = [c.strip() for c in (text or "").split(",") if c.strip()]
    if len(classes) < 2:
        raise InputError(f"--classes needs at least two comma-separated class names; got {text!r}")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise InputError(f"--classes names {', '.join(dupes)} more than once")
    return classes


def resolve_templates(spec: str) -> list[str]:
    """`simple:K`, `general`, a file path, or a literal template containing `{}` (e.g. "{}")."""
    if "{}" in spec and not Path(spec).is_file():
        return parse_templates([spec], source="--templates")
    return load_templates(spec)


EmbedItems = Callable[[str, list[str]], "np.ndarray | Tensor"]
# modality -> (embed items of that modality, encode texts) in one shared space; called once the
# manifest has been read and checked, so a bad manifest fails before a model loads
Embedder = Callable[[str], tuple[EmbedItems, EncodeText]]


def zeroshot_manifest(manifest: str | Path, classes: Sequence[str] | str, templates: str,
                      embedder: Embedder) -> dict[str, Any]:
    """Zero-shot classify every item of a label manifest (see `data.labelled.read_label_manifest`).

    Args:
        classes: class names (a list, or comma-separated text); every label must be one.
        templates: see `resolve_templates`.
        embedder: modality -> (embed, encode_text): embed(modality, file paths) -> (N, d) and
            encode_text(list[str]) -> (n, d), in the same space.

    Returns:
        JSON-able: modality, classes, templates (count), n, top1, top5, seconds (embedding and
        classification), predictions (item, label, prediction, correct, top5, scores) and the
        confusion counts (rows: label, columns: prediction, in the order of classes).

    Raises:
        InputError: a bad manifest, classes or templates, or labels that are not classes.
    """
    from xmodal_core.data.labelled import read_label_manifest

    class_names = parse_classes(classes) if isinstance(classes, str) else [str(c) for c in classes]
    if len(class_names) < 2:
        raise InputError("give at least two classes")
    template_list = resolve_templates(templates)
    modality, items = read_label_manifest(manifest)
    paths, labels = [it.path for it in items], [it.label for it in items]
    check_labels(labels, class_names, str(manifest))
    embed, encode_text = embedder(modality)
    start = time.perf_counter()
    emb = torch.as_tensor(np.asarray(embed(modality, paths)))
    result = zeroshot(emb, labels, class_names, template_list, encode_text)
    return {"modality": modality, "classes": class_names, "templates": len(template_list), "n": result.n,
            "top1": result.top1, "top5": result.top5, "seconds": round(time.perf_counter() - start, 3),
            "predictions": _predictions(result, paths, labels), "confusion": result.confusion}


def check_labels(labels: Sequence[str], class_names: Sequence[str], where: str) -> None:
    """InputError naming the labels that are not classes."""
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise InputError(f"labels {', '.join(repr(u) for u in unknown[:10])} in {where} are not among --classes "
                         f"({', '.join(class_names)})")


def _predictions(result: ClassificationResult, items: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for i, (item, label) in enumerate(zip(items, labels)):
        top = [result.classes[j] for j in result.ranked[i]]
        out.append({"item": item, "label": label, "prediction": top[0], "correct": top[0] == label, "top5": top,
                    "scores": [round(float(s), 4) for s in result.scores[i]]})
    return out

