"""The aligned model: projection heads (and optionally fine-tuned towers) that put two
modalities into one shared space, as trained by `trainers.align` (CWCL, LiT, teacher-student papers).

Read top to bottom: `AlignConfig` (what a run is), `AlignModel` (towers -> heads -> unit
vectors -> loss), `build_model`, the class prior, saving, and `load_aligned` (a trained run
folder, `heads.safetensors` + `config.json`, as embedding functions: `AlignedModel`).

A locked tower keeps its pretrained weights: its features come from the frozen-feature cache
and only its head trains. A tower in `no_head` is used as the encoder gives it, so its space is
the shared space: with the default `no_head=("text",)` and the text tower locked, every run
lands in the same locked-text space, which is what makes speech -> image search work across runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmodal_core.errors import InputError, StoreError
from xmodal_core.fsio import atomic_path, atomic_write_json
from xmodal_core.models.config import (JsonConfig, check_schedule, check_unit_interval, require_at_least_one,
                                       require_encoders)

MODALITIES = ("speech", "text", "image")
LOSSES = ("cl", "cwcl", "l2", "ce", "multitask")
HEADS = ("linear", "mlp", "vocab")
DEFAULT_ENCODERS = {"speech": "whisper-tiny.en", "text": "minilm", "image": "efficientnet-lite0"}
HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"


# =============================================================================== config

@dataclass
class AlignConfig(JsonConfig):
    """One alignment run. Serialises to JSON (`to_dict` / `from_dict`); the store keeps it.

    Towers and locking:
        towers: the two modalities paired by the data, e.g. ("speech", "text").
        encoders: modality -> registry name of its pretrained tower.
        locked: "none" | a tower | "both": which towers keep their pretrained weights
            (features from the cache; only their head trains). CWCL Table 6's settings.
        no_head: towers used as the encoder gives them (no head): their space is the shared one.
            Must be locked (else the shared space would move).
        head: "linear" or "mlp" (linear, GELU, linear, dropout, layer norm: the teacher-student paper).
            "vocab": a classifier over `vocabulary` whose probabilities weight the names' text
            embeddings (`heads.VocabularyHead`), trained with loss "ce"; for a tower paired with a
            locked, head-less text tower (spoken names -> their text).
        vocabulary: the names of a vocab head (default: every distinct text of the training and
            validation splits, sorted).
        freeze_body: a vocab head started `init_from` another trains only the rows of the names that
            run did not know (adding names to a trained head without moving what it already hears).
        hidden_dim: the mlp head's hidden width (default: the shared space's width); the vocab head's.
        init_from: a trained alignment run (folder or id) whose heads and logit scale start this
            run (same towers, head and widths), e.g. adapting the speech head in use to new words.
        embed_dim: width of the shared space; default the `no_head` tower's width, else 256.
        input_noise: during training only, Gaussian noise of this standard deviation is added to
            the unit-norm features of locked towers that have a head (then re-normalised): a
            regulariser for heads on cached features (0 = off). Frozen-tower features of different
            clips share a strong common direction, so a small noise is large next to what tells
            them apart; 0.03 lifts synthetic -> real speech transfer (docs/RESULTS_issue5.md).
        class_prior: modality -> weight w in [0, 1) of the tower's own classifier as a zero-shot
            prior (`xmodal_core.heads.ClassPrior`: EfficientNet's ImageNet-1k probabilities times
            the text tower's embeddings of "a photo of a {class}."). At inference (and validation)
            the embedding is `normalize((1 - w) * head(x) + w * prior(x))`; the head trains alone.
            Needs a locked, head-less text tower (the prior lives in its space) and a tower with a
            classifier. The dev tenth of Tux Paint picked w = 0.3 for the default model.
    Loss:
        loss: "cl" | "cwcl" | "l2" | "ce" (vocab heads) | "multitask"; multitask sums `loss_weights`, e.g.
            {"cwcl": 1.0, "l2": 0.5}. CWCL weights and the L2 teacher come from the anchor tower
            (the locked one; with both or none locked, the `no_head` one, else towers[1]).
    Optimisation (AdamW):
        batch_size: global batch (split over torchrun ranks); lr: for heads and logit scale,
        multiplied by batch_size / lr_base_batch when lr_base_batch is set; tower_lr: for
        fine-tuned towers (same scaling). Linear warm-up over warmup_steps, then `schedule`.
    Evaluation: every epoch (every `eval_every` epochs when set, and after the last) on
        `val_split`: R@1/5/10 both ways, zero-shot top-1/5 with `templates` where records have
        labels and a text tower is aligned. The best evaluated epoch by `best_metric` is saved
        (`heads.safetensors`).
    """

    dataset: str = "tuxpaint"
    towers: tuple[str, str] = ("image", "text")
    encoders: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENCODERS))
    locked: str = "both"
    no_head: tuple[str, ...] = ("text",)
    head: str = "mlp"
    hidden_dim: int | None = None
    vocabulary: tuple[str, ...] = ()
    freeze_body: bool = False
    init_from: str | None = None
    embed_dim: int | None = None
    dropout: float = 0.1
    input_noise: float = 0.0
    class_prior: dict[str, float] = field(default_factory=dict)
    loss: str = "cwcl"
    loss_weights: dict[str, float] = field(default_factory=dict)
    cwcl_symmetric: bool = False
    logit_scale_init: float = 1 / 0.07
    learn_logit_scale: bool = True
    batch_size: int = 64
    lr: float = 1e-3
    lr_base_batch: int | None = None
    tower_lr: float = 1e-5
    epochs: int = 10
    warmup_steps: int = 0
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    train_split: str = "train"
    val_split: str = "val"
    max_train: int | None = None
    max_val: int | None = None
    templates: str = "simple"
    best_metric: str = "r_mean"
    eval_batch_size: int = 256
    eval_every: int | None = None

    def __post_init__(self) -> None:
        self.towers = tuple(self.towers)
        self.no_head = tuple(self.no_head)
        a, b = self.towers if len(self.towers) == 2 else (None, None)
        if a is None or a == b or a not in MODALITIES or b not in MODALITIES:
            raise InputError(f"towers must be two different modalities of {', '.join(MODALITIES)}; "
                             f"got {list(self.towers)}")
        if self.locked not in ("none", "both", a, b):
            raise InputError(f"locked must be 'none', 'both', {a!r} or {b!r}; got {self.locked!r}")
        require_encoders(self.encoders, self.towers)
        for m in self.no_head:
            if m not in self.towers:
                raise InputError(f"no_head names {m!r}, which is not one of the towers {list(self.towers)}")
            if not self.is_locked(m):
                raise InputError(f"the {m} tower has no head, so it must be locked (locked={m!r} or 'both'); "
                                 "a fine-tuned tower without a head would move the shared space")
        if len(self.no_head) == 2 and self.locked == "both":
            raise InputError("both towers are locked and have no head: there is nothing to train")
        if self.hidden_dim is not None and not 1 <= int(self.hidden_dim) <= 16384:
            raise InputError(f"hidden_dim must be between 1 and 16384; got {self.hidden_dim}")
        if self.init_from is not None:
            self.init_from = str(self.init_from)
        self.vocabulary = tuple(str(v) for v in self.vocabulary)
        self._check_vocab_head()
        if self.head not in HEADS:
            raise InputError(f"head must be one of {', '.join(HEADS)}; got {self.head!r}")
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.loss == "multitask":
            bad = sorted(set(self.loss_weights) - {"cl", "cwcl", "l2", "ce"})
            if not self.loss_weights or bad:
                raise InputError("loss=multitask needs loss_weights over cl / cwcl / l2, e.g. "
                                 '{"cwcl": 1.0, "l2": 0.5}' + (f"; unknown: {bad}" if bad else ""))
        check_schedule(self.schedule)
        require_at_least_one(self, ("batch_size", "epochs"))
        if self.lr <= 0 or self.tower_lr < 0 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise InputError("lr and grad_clip must be positive, tower_lr and warmup_steps not negative")
        check_unit_interval("dropout", self.dropout)
        check_unit_interval("input_noise", self.input_noise, "(a standard deviation on unit vectors)")
        for m, w in self.class_prior.items():
            if m not in self.towers or m in self.no_head or not self.is_locked(m):
                raise InputError(f"class_prior names {m!r}: it must be a locked tower with a head, one of "
                                 f"{[t for t in self.towers if t not in self.no_head]}")
            if "text" not in self.no_head:
                raise InputError("class_prior needs the text tower locked and head-less (no_head=['text']): the "
                                 "prior maps into the text tower's own space")
            if not 0 <= float(w) < 1:
                raise InputError(f"class_prior weight for {m} must be in [0, 1); got {w}")
        if self.best_metric not in self.metric_names():
            raise InputError(f"best_metric {self.best_metric!r} is not a validation metric of this run; "
                             f"use one of {', '.join(self.metric_names())}")

    def _check_vocab_head(self) -> None:
        uses_ce = "ce" in self.loss_terms()
        if self.head != "vocab" and not uses_ce:
            return
        if self.head != "vocab" or not uses_ce:
            raise InputError("a vocab head trains with the ce loss and the ce loss needs a vocab head: set both "
                             "head=vocab and loss=ce (or loss=multitask with a ce weight)")
        if "text" not in self.towers or "text" not in self.no_head or not self.is_locked("text"):
            raise InputError("a vocab head maps onto names in the text space: pair it with a locked, head-less "
                             "text tower (towers=[..., 'text'], locked=both, no_head=['text'])")

    # -- derived settings

    def metric_names(self) -> list[str]:
        """Names `evaluate` can report: R@1/5/10 both ways, their mean, and zero-shot with a text tower."""
        a, b = self.towers
        names = [f"{q}2{g}_r@{k}" for q, g in ((a, b), (b, a)) for k in (1, 5, 10)] + ["r_mean"]
        return names + (["zeroshot_top1", "zeroshot_top5"] if "text" in self.towers else [])

    def is_locked(self, modality: str) -> bool:
        return self.locked in ("both", modality)

    @property
    def anchor(self) -> str:
        """The reference tower: CWCL's locked side (its similarities weight the targets), L2's teacher."""
        if self.locked in self.towers:
            return self.locked
        if self.no_head:
            return self.no_head[0]
        return self.towers[1]

    @property
    def other(self) -> str:
        return self.towers[0] if self.anchor == self.towers[1] else self.towers[1]

    def loss_terms(self) -> dict[str, float]:
        return dict(self.loss_weights) if self.loss == "multitask" else {self.loss: 1.0}

    def scaled_lr(self, lr: float) -> float:
        """`lr`, linearly scaled to the global batch when `lr_base_batch` is set."""
        return lr * self.batch_size / self.lr_base_batch if self.lr_base_batch else lr

# =============================================================================== model

class AlignModel(nn.Module):
    """towers (fine-tuned ones only) -> heads -> unit vectors; `forward` returns the loss.

    Args:
        cfg: the run config.
        in_dims: modality -> width of the tower's pooled output.
        towers: modality -> a `TrainableTower` for each tower that is not locked.
    """

    def __init__(self, cfg: AlignConfig, in_dims: Mapping[str, int], towers: Mapping[str, nn.Module] | None = None,
                 priors: Mapping[str, nn.Module] | None = None):
        super().__init__()
        from xmodal_core.heads import make_head
        from xmodal_core.losses import ClipLoss, CwclLoss, L2AlignmentLoss, VocabularyLoss

        self.cfg = cfg
        self.embed_dim = resolve_embed_dim(cfg, in_dims)
        self.towers = nn.ModuleDict(dict(towers or {}))
        self.heads = nn.ModuleDict({m: make_head(cfg.head, in_dims[m], self.embed_dim, cfg.dropout, cfg.hidden_dim,
                                                 len(cfg.vocabulary) or None)
                                    for m in cfg.towers if m not in cfg.no_head})
        self.priors = nn.ModuleDict(dict(priors or {}))
        terms = cfg.loss_terms()
        scale = dict(init_scale=cfg.logit_scale_init, learn_scale=cfg.learn_logit_scale)
        self.losses = nn.ModuleDict()
        if "cl" in terms:
            self.losses["cl"] = ClipLoss(**scale)
        if "cwcl" in terms:
            self.losses["cwcl"] = CwclLoss(**scale, symmetric=cfg.cwcl_symmetric)
        if "l2" in terms:
            self.losses["l2"] = L2AlignmentLoss()
        if "ce" in terms:
            self.losses["ce"] = VocabularyLoss()

    def _head_input(self, modality: str, x: Tensor | Sequence[Any]) -> Tensor:
        """What the modality's head sees: the tower's output as unit rows (plus the training noise)."""
        h = self.towers[modality](x) if modality in self.towers else x
        h = F.normalize(h.float(), dim=-1)  # heads always see unit rows, cached or computed
        if self.training and self.cfg.input_noise > 0 and modality in self.heads and modality not in self.towers:
            h = F.normalize(h + self.cfg.input_noise * torch.randn_like(h), dim=-1)
        return h

    def embed(self, modality: str, x: Tensor | Sequence[Any]) -> Tensor:
        """Tower input (features (n, d_in) or raw items) -> (n, embed_dim) unit rows."""
        h = self._head_input(modality, x)
        if modality in self.heads:
            x_unit = h
            h = self.heads[modality](h)
            if modality in self.priors and not self.training:  # the head trains alone (see AlignConfig)
                w = float(self.cfg.class_prior[modality])
                h = (1 - w) * F.normalize(h.float(), dim=-1) + w * self.priors[modality](x_unit)
        return F.normalize(h.float(), dim=-1)

    @torch.no_grad()
    def head_and_prior(self, modality: str, features: Tensor) -> tuple[Tensor, Tensor]:
        """The two parts `embed` mixes for a tower with a class prior, before mixing: the head's
        and the prior's (n, embed_dim) unit rows for cached (n, d_in) features, in eval mode."""
        if modality not in self.priors or modality in self.towers:
            raise InputError(f"{modality} has no class prior on cached features in this run "
                             f"(priors: {sorted(self.priors) or 'none'})")
        was_training = self.training
        self.eval()
        try:
            x_unit = F.normalize(features.float(), dim=-1)
            head = F.normalize(self.heads[modality](x_unit).float(), dim=-1)
            return head, self.priors[modality](x_unit)
        finally:
            self.train(was_training)

    def forward(self, anchor_in: Tensor | Sequence[Any], other_in: Tensor | Sequence[Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """One (local) batch of pairs -> (weighted loss, {term: loss}). Contrastive terms gather
        the batch over ranks, so negatives are the global batch."""
        cfg = self.cfg
        z_anchor = self.embed(cfg.anchor, anchor_in)  # (n, d)
        ce_only = set(self.losses) == {"ce"}  # the vocab head's logits are all it needs
        z_other = None if ce_only else self.embed(cfg.other, other_in)  # (n, d)
        parts: dict[str, Tensor] = {}
        if "cl" in self.losses:
            parts["cl"] = self.losses["cl"](z_anchor, z_other)
        if "cwcl" in self.losses:
            # Target weights from the anchor's own pretrained features when it is locked (stable,
            # as in the paper), else from its current embedding (detached inside the loss).
            source = anchor_in if isinstance(anchor_in, Tensor) else None
            parts["cwcl"] = self.losses["cwcl"](z_anchor, z_other, weight_source=source)
        if "l2" in self.losses:
            parts["l2"] = self.losses["l2"](z_other, z_anchor)  # student, teacher
        if "ce" in self.losses:  # the vocab head kept its logits from embedding this batch (or computes only them)
            head = self.heads[cfg.other]
            logits = head.logits(self._head_input(cfg.other, other_in)) if ce_only else head.last_logits
            parts["ce"] = self.losses["ce"](logits, head.targets(z_anchor))
        weights = cfg.loss_terms()
        loss = sum(weights[k] * v for k, v in parts.items())
        return loss, parts

    def logit_scale(self) -> float | None:
        for name in ("cwcl", "cl"):
            if name in self.losses:
                return float(self.losses[name].logit_scale.log_scale.detach().exp())
        return None


def resolve_embed_dim(cfg: AlignConfig, in_dims: Mapping[str, int]) -> int:
    """Width of the shared space (see AlignConfig.embed_dim)."""
    if cfg.no_head:
        width = int(in_dims[cfg.no_head[0]])
        if cfg.embed_dim is not None and cfg.embed_dim != width:
            raise InputError(f"embed_dim={cfg.embed_dim} but the {cfg.no_head[0]} tower has no head and is "
                             f"{width}-d: drop embed_dim or no_head")
        if len(cfg.no_head) == 2 and in_dims[cfg.no_head[1]] != width:
            raise InputError(f"towers without heads must have the same width; got {dict(in_dims)}")
        return width
    return int(cfg.embed_dim or 256)


def build_model(cfg: AlignConfig, in_dims: Mapping[str, int | None]) -> AlignModel:
    """The model for `cfg`: fine-tunable copies of unlocked towers (from the registry), heads, losses.
    `in_dims` gives the width of locked towers' features; unlocked widths come from the towers."""
    from xmodal_core.models.towers import trainable_tower
    from xmodal_core.registry import get_encoder

    towers, dims = {}, dict(in_dims)
    for m in cfg.towers:
        if not cfg.is_locked(m):
            towers[m] = trainable_tower(get_encoder(cfg.encoders[m], device="cpu"))
            dims[m] = towers[m].dim
        elif dims.get(m) is None:
            raise InputError(f"the locked {m} tower needs its feature width")
    priors = {m: class_prior(cfg.encoders[m], cfg.encoders["text"]) for m in cfg.class_prior}
    return AlignModel(cfg, dims, towers, priors)


_PRIORS: dict[tuple[str, str], Any] = {}


def class_prior(encoder_name: str, text_encoder_name: str) -> nn.Module:
    """`ClassPrior` of a tower with a classifier (EfficientNet's ImageNet-1k layer), its class
    names embedded by the text tower as "a photo of a {name}."; built once per process."""
    from xmodal_core.heads import ClassPrior
    from xmodal_core.registry import get_encoder

    key = (encoder_name, text_encoder_name)
    if key not in _PRIORS:
        encoder = get_encoder(encoder_name)
        if not hasattr(encoder, "imagenet_classifier"):
            raise InputError(f"class_prior needs a tower with its own classifier; {encoder_name} has none "
                             "(efficientnet-lite0 has one)")
        weight, bias, names = encoder.imagenet_classifier()
        text = torch.as_tensor(get_encoder(text_encoder_name).encode([f"a photo of a {n}." for n in names]))
        _PRIORS[key] = (weight, bias, text)
    weight, bias, text = _PRIORS[key]
    return ClassPrior(weight, bias, text, feature_norm=IMAGENET_FEATURE_NORM)


# Typical L2 norm of EfficientNet-Lite0's pooled features (measured on the Tux Paint held-out
# images: 16.4 +- 2.1); cached features are unit rows, the classifier wants the raw scale.
IMAGENET_FEATURE_NORM = 16.4


def text_encoder_fn(model: AlignModel, cfg: AlignConfig, device: torch.device | str = "cpu", *,
                    cached: bool = False):
    """list[str] -> (n, d) shared-space embeddings through the model's text path; with `cached`, a
    locked text tower's features come from the feature cache (training-time class names, which
    every validation and every later run asks for again), not from the encoder each time."""
    def encode(texts: list[str]) -> Tensor:
        if "text" in model.towers:
            x: Tensor | list[str] = list(texts)
        elif cached:
            from xmodal_core.data.features import text_features

            x = torch.as_tensor(text_features(cfg.encoders["text"], texts), device=device)
        else:
            from xmodal_core.registry import get_encoder

            x = torch.as_tensor(get_encoder(cfg.encoders["text"]).encode(list(texts)), device=device)
        with torch.no_grad():
            return model.embed("text", x).float().cpu()
    return encode


# =============================================================================== saving and loading

def save_config(run_dir: str | Path, cfg: AlignConfig, embed_dim: int, in_dims: Mapping[str, int | None]) -> Path:
    data = {"kind": "align", "config": cfg.to_dict(), "embed_dim": embed_dim, "in_dims": dict(in_dims)}
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, data)


def save_heads(run_dir: str | Path, model: AlignModel) -> Path:
    """Heads, fine-tuned towers and the logit scale as safetensors (atomic)."""
    from safetensors.torch import save_file

    path = Path(run_dir) / HEADS_FILE
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "xmodal-align-v1"})
    return path


class AlignedModel:
    """A trained alignment run as embedding functions into its shared space.

    `embed_text`, `embed_speech`, `embed_image`: lists of items -> (N, d) float32 unit rows
    (numpy). A modality the run did not align raises InputError, except the text of a
    locked, head-less text tower, which is the shared space itself.
    """

    def __init__(self, run_dir: Path, cfg: AlignConfig, model: AlignModel, device: torch.device):
        self.run_dir, self.config, self.model, self.device = run_dir, cfg, model.eval(), device
        self.dim = model.embed_dim

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.towers

    @torch.no_grad()
    def embed(self, modality: str, items: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        if modality not in self.config.towers:
            raise InputError(f"run {self.run_dir.name} aligned {' and '.join(self.config.towers)}; it cannot embed "
                             f"{modality}")
        items = list(items)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            if modality in self.model.towers:
                x: Tensor | list = chunk
            else:
                from xmodal_core.registry import get_encoder

                encoder = get_encoder(self.config.encoders[modality])
                x = torch.as_tensor(encoder.encode(chunk), device=self.device)
            out[start:start + len(chunk)] = self.model.embed(modality, x).float().cpu().numpy()
        return out

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed("text", texts)

    def embed_speech(self, items: Sequence[Any]) -> np.ndarray:
        return self.embed("speech", items)

    def embed_image(self, items: Sequence[Any]) -> np.ndarray:
        return self.embed("image", items)


def resolve_run_dir(run_dir_or_id: str | int | Path) -> Path:
    """A run folder from a path, or from a run id (under `paths.runs_dir()`)."""
    from xmodal_core import paths

    text = str(run_dir_or_id)
    path = paths.runs_dir() / text if text.isdigit() else Path(text)
    if not (path / CONFIG_FILE).is_file():
        raise StoreError(f"no trained run at {path} ({CONFIG_FILE} missing): give a run id from `xmodal runs` "
                         "or a run folder")
    return path


def load_aligned(run_dir_or_id: str | int | Path, device: str = "cpu") -> AlignedModel:
    """The best checkpoint of an alignment run (`heads.safetensors` + `config.json`)."""
    from safetensors.torch import load_file

    run_dir = resolve_run_dir(run_dir_or_id)
    saved = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    if saved.get("kind") != "align":
        raise InputError(f"run folder {run_dir} holds a {saved.get('kind')!r} run, not an alignment run")
    heads = run_dir / HEADS_FILE
    if not heads.is_file():
        raise StoreError(f"run {run_dir.name} has no trained heads yet ({HEADS_FILE}); it may still be in its "
                         "first epoch or have failed before one finished")
    cfg = AlignConfig.from_dict(saved["config"])
    model = build_model(cfg, saved["in_dims"])
    state = {k: v for k, v in load_file(str(heads)).items() if not k.startswith("priors.")}  # rebuilt, not loaded
    model.load_state_dict(state)
    dev = torch.device(device)
    return AlignedModel(run_dir, cfg, model.to(dev), dev)
