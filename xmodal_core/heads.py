"""Projection heads that map a frozen tower's pooled output into the shared space.

Outputs are not normalised; the caller (loss, encoder wrapper) normalises.
"""
from __future__ import annotations

from torch import Tensor, nn

from xmodal_core.errors import InputError

__all__ = ["HEAD_KINDS", "LinearHead", "MLPHead", "IdentityHead", "make_head"]

HEAD_KINDS = ("linear", "mlp", "identity")


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


def make_head(kind: str, in_dim: int, out_dim: int, dropout: float = 0.1) -> nn.Module:
    """A projection head by name.

    Args:
        kind: "linear", "mlp" (linear, GELU, linear, dropout, layer norm) or "identity"
            (only when in_dim == out_dim).
        in_dim: width of the tower's pooled output; out_dim: width of the shared space.
        dropout: for "mlp".

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
        return MLPHead(in_dim, out_dim, dropout)
    if kind == "identity":
        if in_dim != out_dim:
            raise InputError(
                f"an identity head needs in_dim == out_dim; got {in_dim} -> {out_dim} (use 'linear' or 'mlp')"
            )
        return IdentityHead(in_dim)
    raise InputError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
