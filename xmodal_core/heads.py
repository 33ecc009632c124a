"""Projection heads that map a frozen tower's pooled output into the shared space.

Outputs are not normalised; the caller (loss, encoder wrapper) normalises.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from xmodal_core.errors import InputError

__all__ = ["HEAD_KINDS", "LinearHead", "MLPHead", "IdentityHead", "ClassPrior", "VocabularyHead", "make_head"]

HEAD_KINDS = ("linear", "mlp", "identity", "vocab")


class LinearHead(nn.Module):
    """One linear map: (..., in_dim) -> (..., out_dim)."""

    kind = "linear"

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class MLPHead(nn.Module):
    """The teacher-student paper's head: linear, GELU, linear, dropout, layer norm.

    (..., in_dim) -> (..., out_dim); the hidden width is `hidden_dim` (default out_dim).
    """

    kind = "mlp"

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
            nn.Dropout(dropout),
            nn.LayerNorm(out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class IdentityHead(nn.Identity):
    """No projection (the tower already outputs the shared width)."""

    kind = "identity"

    def __init__(self, dim: int):
        super().__init__()
        self.in_dim = self.out_dim = dim


class ClassPrior(nn.Module):
    """A frozen tower's own classifier as a zero-shot map into the text space.

    A unit feature row x becomes `softmax((feature_norm * x @ W.T + b) / temperature) @ E`,
    L2-normalised: the class probabilities of the tower's classifier (W, b; e.g. EfficientNet's
    ImageNet-1k layer) weighting the text embeddings E of the class names. `feature_norm`
    restores the scale the cached features lost when they were normalised (their typical norm).
    Nothing here trains. The tensors are non-persistent buffers: they follow the module's device
    but are not saved with the heads, since they are rebuilt from the packaged towers on load.

    Args:
        weight: (C, in_dim) classifier weights; bias: (C,); class_text: (C, out_dim) unit rows.
    """

    kind = "class-prior"

    def __init__(self, weight: Tensor, bias: Tensor, class_text: Tensor, feature_norm: float = 16.0,
                 temperature: float = 1.0):
        super().__init__()
        if weight.ndim != 2 or bias.shape != weight.shape[:1] or class_text.shape[0] != weight.shape[0]:
            raise InputError(f"class prior shapes disagree: weight {tuple(weight.shape)}, bias {tuple(bias.shape)}, "
                             f"class text {tuple(class_text.shape)}")
        if feature_norm <= 0 or temperature <= 0:
            raise InputError("feature_norm and temperature must be positive")
        self.in_dim, self.out_dim = weight.shape[1], class_text.shape[1]
        self.feature_norm, self.temperature = float(feature_norm), float(temperature)
        self.register_buffer("weight", weight.float().clone(), persistent=False)
        self.register_buffer("bias", bias.float().clone(), persistent=False)
        self.register_buffer("class_text", class_text.float().clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.feature_norm * x.float() @ self.weight.T + self.bias
        probs = (logits / self.temperature).softmax(dim=-1)
        return nn.functional.normalize(probs @ self.class_text, dim=-1)


class VocabularyHead(nn.Module):
    """A head that knows a vocabulary: an MLP classifier over its V names whose probabilities
    weight the names' embeddings in the (locked) text space, so its output lands on a name when
    it is sure and between similar-sounding names when it is not.

    (..., in_dim) -> logits (..., V) -> softmax -> (..., V) @ names (V, out_dim) -> (..., out_dim).
    Trained with cross-entropy over the names (`losses.VocabularyLoss`); the last training
    batch's logits are kept in `last_logits` for that loss. `names` is a buffer: the shared
    space's embeddings of the vocabulary (unit rows), saved with the weights.
    """

    kind = "vocab"

    def __init__(self, in_dim: int, out_dim: int, vocabulary_size: int, dropout: float = 0.1,
                 hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or 1024
        self.in_dim, self.out_dim, self.vocabulary_size = in_dim, out_dim, vocabulary_size
        self.body = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden_dim, vocabulary_size)
        self.register_buffer("names", torch.zeros(vocabulary_size, out_dim))
        self.last_logits: Tensor | None = None
        self.new_weight: nn.Parameter | None = None  # set by learn_only
        self.new_bias: nn.Parameter | None = None

    def logits(self, x: Tensor) -> Tensor:
        h = self.body(x)
        if self.new_weight is None:
            return self.out(h)
        known = nn.functional.linear(h, self.known_weight, self.known_bias)
        new = nn.functional.linear(h, self.new_weight, self.new_bias)
        return torch.cat([known, new], dim=-1).index_select(-1, self.order)

    def learn_only(self, rows: Sequence[int]) -> None:
        """Train only these output rows (new names): the body and every other row stay exactly as
        they are. The learning rows become their own parameters, so backward and the optimiser
        touch only them (a few new names among thousands cost a few rows, not the whole layer);
        `state_dict` and `load_state_dict` keep the plain layout (rows folded back into `out`)."""
        rows = sorted({int(r) for r in rows})
        if not rows or rows[0] < 0 or rows[-1] >= self.vocabulary_size:
            raise InputError(f"learn_only needs row indexes in [0, {self.vocabulary_size}); got {rows[:5]}")
        new = torch.as_tensor(rows, dtype=torch.long)
        mask = torch.ones(self.vocabulary_size, dtype=torch.bool)
        mask[new] = False
        known = mask.nonzero()[:, 0]
        self.body.requires_grad_(False)
        self.out.requires_grad_(False)
        w, b = self.out.weight.detach(), self.out.bias.detach()
        self.register_buffer("learn_rows", new, persistent=False)
        self.register_buffer("known_weight", w[known].clone(), persistent=False)
        self.register_buffer("known_bias", b[known].clone(), persistent=False)
        self.register_buffer("order", torch.argsort(torch.cat([known, new])), persistent=False)
        self.new_weight = nn.Parameter(w[new].clone())
        self.new_bias = nn.Parameter(b[new].clone())
        self.register_state_dict_post_hook(_fold_learning_rows)
        self.register_load_state_dict_pre_hook(_split_learning_rows)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.logits(x)
        self.last_logits = logits if self.training else None
        return logits.float().softmax(dim=-1) @ self.names

    def targets(self, text_embeddings: Tensor) -> Tensor:
        """(n,) vocabulary index of each row of the paired texts' embeddings (its nearest name)."""
        return (nn.functional.normalize(text_embeddings.float(), dim=-1) @ self.names.T).argmax(dim=-1)


def _fold_learning_rows(head: VocabularyHead, state: dict, prefix: str, _meta: Any) -> None:
    """state_dict hook of a `learn_only` head: the learning rows go back into `out`."""
    for part in ("weight", "bias"):
        learnt = state.pop(f"{prefix}new_{part}")
        full = state[f"{prefix}out.{part}"].detach().clone()
        full[head.learn_rows] = learnt.detach().to(full.dtype)
        state[f"{prefix}out.{part}"] = full


def _split_learning_rows(head: VocabularyHead, state: dict, prefix: str, *_args: Any) -> None:
    """load_state_dict hook of a `learn_only` head: the learning rows come out of `out` (the known
    rows stay those it was frozen with)."""
    for part in ("weight", "bias"):
        key = f"{prefix}out.{part}"
        if key in state and f"{prefix}new_{part}" not in state:
            state[f"{prefix}new_{part}"] = state[key][head.learn_rows.to(state[key].device)]


def make_head(kind: str, in_dim: int, out_dim: int, dropout: float = 0.1, hidden_dim: int | None = None,
              vocabulary_size: int | None = None) -> nn.Module:
    """A projection head by name.

    Args:
        kind: "linear", "mlp" (linear, GELU, linear, dropout, layer norm) or "identity"
            (only when in_dim == out_dim).
        in_dim: width of the tower's pooled output; out_dim: width of the shared space.
        dropout: for "mlp".
        hidden_dim: the "mlp" head's hidden width (default out_dim), the "vocab" head's (default 1024).
        vocabulary_size: number of names of a "vocab" head.

    Returns:
        an nn.Module with `.kind`, `.in_dim`, `.out_dim`; (..., in_dim) -> (..., out_dim), not normalised.
    """
    for name, value in (("in_dim", in_dim), ("out_dim", out_dim)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer; got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must be in [0, 1); got {dropout}")
    if kind == "linear":
        return LinearHead(in_dim, out_dim)
    if kind == "mlp":
        return MLPHead(in_dim, out_dim, dropout, hidden_dim)
    if kind == "vocab":
        if not vocabulary_size:
            raise InputError("a vocab head needs its vocabulary (the names it is trained to hear)")
        return VocabularyHead(in_dim, out_dim, int(vocabulary_size), dropout, hidden_dim)
    if kind == "identity":
        if in_dim != out_dim:
            raise InputError(
                f"an identity head needs in_dim == out_dim; got {in_dim} -> {out_dim} (use 'linear' or 'mlp')"
            )
        return IdentityHead(in_dim)
    raise InputError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
