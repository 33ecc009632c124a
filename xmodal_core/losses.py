"""The papers' alignment losses: CL (CLIP), CWCL, FaST-VGS masked margin softmax, L2 teacher-student.

Each loss is a plain function of tensors (the math, see docs/DESIGN.md "Methods") plus a
small `nn.Module` for training that owns the learnable logit scale and gathers the batch
across ranks with `gather_features`, so the negatives are the global batch and the math
reads the same on one process or many.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from xmodal_core.errors import InputError

__all__ = [
    "clip_loss",
    "cwcl_loss",
    "cwcl_weights",
    "masked_margin_softmax_loss",
    "l2_alignment_loss",
    "multitask",
    "gather_features",
    "LogitScale",
    "ClipLoss",
    "CwclLoss",
    "MaskedMarginSoftmaxLoss",
    "L2AlignmentLoss",
    "MultitaskLoss",
]


# ---------------------------------------------------------------------------------------------
# checks


def _check_pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    if a.dim() != 2 or b.dim() != 2:
        raise InputError(
            f"{names[0]} and {names[1]} must be (N, d) matrices; got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape != b.shape:
        raise InputError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same "
            "shape: row i of one is paired with row i of the other"
        )
    if a.shape[0] == 0:
        raise InputError("the batch is empty; a contrastive loss needs at least one pair")


def _as_scale(logit_scale: Tensor | float, like: Tensor) -> Tensor | float:
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise InputError(f"logit_scale must be a scalar; got shape {tuple(logit_scale.shape)}")
        return logit_scale.reshape(()).to(like.dtype)
    return float(logit_scale)


# ---------------------------------------------------------------------------------------------
# the math


class _ContrastiveCE(torch.autograd.Function):
    """Mean of the row-wise and the column-wise cross-entropies of an (N, N) logit matrix.

    Row i's target is `row_w[i] / row_norm[i]` (identity when row_w is None); column j's target
    is `col_w[:, j] / col_norm[j]` (identity when None); every target must sum to 1. One
    function for CL and CWCL so both directions share the exponentials, with a hand-written
    backward: `dL/dS = (softmax_rows(S) - R + softmax_cols(S) - C) / (2N)`, a few passes over
    the N x N matrix instead of autograd's log_softmax / gather / weighted-sum chain.
    """

    @staticmethod
    def forward(ctx, logits, row_w, row_norm, col_w, col_norm):  # type: ignore[override]
        n = logits.shape[0]
        ctx.in_dtype = logits.dtype
        if logits.dtype in (torch.float16, torch.bfloat16):  # (autocast) exponentials in float32
            shared = col_w is not None and col_w is row_w
            logits = logits.float()
            row_w, row_norm, col_w, col_norm = (
                None if t is None else t.float() for t in (row_w, row_norm, col_w, col_norm)
            )
            col_w = row_w if shared else col_w
        lse_rows = torch.logsumexp(logits, dim=1)  # (N,)
        lse_cols = torch.logsumexp(logits, dim=0)  # (N,)
        diag = logits.diagonal()
        if row_w is not None and col_w is row_w:  # one weight matrix for both directions
            weighted = row_w * logits
            row_dot, col_dot = weighted.sum(dim=1) / row_norm, weighted.sum(dim=0) / col_norm
        else:
            row_dot = diag if row_w is None else torch.linalg.vecdot(row_w, logits, dim=1) / row_norm
            col_dot = diag if col_w is None else torch.linalg.vecdot(col_w, logits, dim=0) / col_norm
        loss = ((lse_rows - row_dot).sum() + (lse_cols - col_dot).sum()) / (2 * n)
        ctx.save_for_backward(logits, lse_rows, lse_cols, row_w, row_norm, col_w, col_norm)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        logits, lse_rows, lse_cols, row_w, row_norm, col_w, col_norm = ctx.saved_tensors
        n = logits.shape[0]
        grad = torch.sub(logits, lse_rows[:, None]).exp_()  # softmax over each row
        grad.add_(torch.sub(logits, lse_cols[None, :]).exp_())  # + softmax over each column
        if row_w is None:
            grad.diagonal().sub_(1)
        else:
            grad.addcdiv_(row_w, row_norm[:, None], value=-1)
        if col_w is None:
            grad.diagonal().sub_(1)
        else:
            grad.addcdiv_(col_w, col_norm[None, :], value=-1)
        grad.mul_(grad_loss / (2 * n))
        return grad.to(ctx.in_dtype), None, None, None, None


def clip_loss(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CL, the CLIP contrastive loss.

    Args:
        a, b: (N, d) L2-normalised embeddings of two modalities; row i of `a` pairs with row i of `b`.
        logit_scale: scalar (1 / temperature), a float or a 0-d / 1-element tensor (may require grad).

    Returns:
        0-d tensor: mean of the row-wise and column-wise cross-entropies of
        `S = logit_scale * a @ b.T` with targets `i == j`.
    """
    _check_pair(a, b, ("a", "b"))
    # Scaling a (N x d) rather than the logits (N x N) saves two passes over N x N.
    logits = (a * _as_scale(logit_scale, a)) @ b.T  # (N, N), rows: a_i against every b_j
    return _ContrastiveCE.apply(logits, None, None, None, None)


def cwcl_weights(x: Tensor) -> Tensor:
    """CWCL's default target weights from one (frozen) modality: `(1 + cos(x_i, x_j)) / 2`.

    Args:
        x: (N, d) embeddings; rows are normalised here, so any scale works.

    Returns:
        (N, N) detached weights in [0, 1], symmetric, 1 on the diagonal (up to rounding).
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise InputError(f"weights come from an (N, d) matrix with N >= 1; got shape {tuple(x.shape)}")
    with torch.no_grad():
        xn = F.normalize(x.detach(), dim=-1)
        return _half_gram_plus_half(xn)


def _half_gram_plus_half(xn: Tensor) -> Tensor:
    """`(1 + xn @ xn.T) / 2` for (N, d) rows: (N, N), symmetric up to rounding.

    The Gram matrix is symmetric: on the CPU (where the matmuls bound a CWCL step) it is built
    from 2 x 2 blocks, the upper-right block computed once and mirrored, which is 3/4 of the
    multiply-adds of one matmul (~25% faster at N = 1024). BLAS `syrk` would halve them, but
    scipy's BLAS threads fight torch's OpenMP threads for the cores (measured 50x slower steps
    on 2 busy cores). On GPUs, one matmul.
    """
    n = xn.shape[0]
    if xn.device.type != "cpu" or n < 512:
        return torch.mm(xn, xn.T).mul_(0.5).add_(0.5)
    h = n // 2
    top, bottom = xn[:h], xn[h:]
    gram = torch.empty((n, n), dtype=xn.dtype)
    torch.mm(top, top.T, out=gram[:h, :h])
    torch.mm(top, bottom.T, out=gram[:h, h:])
    torch.mm(bottom, bottom.T, out=gram[h:, h:])
    gram[h:, :h].copy_(gram[:h, h:].T)
    return gram.mul_(0.5).add_(0.5)


def cwcl_loss(
    locked: Tensor,
    trained: Tensor,
    logit_scale: Tensor | float,
    weights: Tensor | None = None,
    symmetric: bool = False,
) -> Tensor:
    """CWCL, the continuously weighted contrastive loss (one modality locked, one trained).

    With `S = logit_scale * locked @ trained.T`, the locked->trained direction is
    `-(1/N) sum_i sum_j (w_ij / sum_k w_ik) log_softmax_j(S)[i, j]`; the trained->locked
    direction is plain cross-entropy over the columns of S (targets `i == j`), or weighted the
    same way when `symmetric=True`: trained item j's target over the locked items i is row j of
    w normalised, `w_ji / sum_k w_jk`. Returns the mean of the two directions. With
    `weights = I` it equals `clip_loss(locked, trained, logit_scale)`.

    Args:
        locked: (N, d) L2-normalised embeddings of the locked (frozen, pretrained) modality.
        trained: (N, d) L2-normalised embeddings of the modality being trained.
        logit_scale: scalar (1 / temperature).
        weights: (N, N) non-negative target weights, every row with a positive sum; default
            `cwcl_weights(locked)`, i.e. `(1 + locked_n @ locked_n.T) / 2`. Always detached: no
            gradient reaches them or, through them, `locked` (gradient still reaches `locked`
            through S if it requires grad).
        symmetric: weight the trained->locked direction too.

    Returns:
        0-d tensor.
    """
    _check_pair(locked, trained, ("locked", "trained"))
    n = locked.shape[0]
    if weights is None:
        weights = cwcl_weights(locked)
        known_symmetric = True
    else:
        if weights.shape != (n, n):
            raise InputError(f"weights must be ({n}, {n}) for a batch of {n}; got {tuple(weights.shape)}")
        weights = weights.detach().to(device=locked.device, dtype=locked.dtype)
        known_symmetric = False
        if bool((weights < 0).any()):
            raise InputError("CWCL weights must be non-negative (the default (1 + cos) / 2 is in [0, 1])")
    row_sums = weights.sum(dim=1)
    # The default weights have a diagonal of 1; given ones are checked (a device sync).
    if not known_symmetric and not bool((row_sums > 0).all()):
        raise InputError("every row of the CWCL weights must have a positive sum")
    logits = (locked * _as_scale(logit_scale, locked)) @ trained.T  # (N, N), rows: locked_i vs trained_j
    if not symmetric:
        return _ContrastiveCE.apply(logits, weights, row_sums, None, None)
    # Column j's target over rows i is w_ji / sum_k w_jk: the transpose of w, normalised by
    # row_sums[j]; the default weights are symmetric (up to rounding), so w itself serves.
    col_w = weights if known_symmetric else weights.T.contiguous()
    return _ContrastiveCE.apply(logits, weights, row_sums, col_w, row_sums)


def masked_margin_softmax_loss(scores: Tensor, item_ids: Tensor | Sequence, margin: float = 1.0) -> Tensor:
    """FaST-VGS masked margin softmax loss.

    For each row i: `-log( e^(S_ii - margin) / (e^(S_ii - margin) + sum_{j: item_j != item_i} e^(S_ij)) )`,
    averaged over rows; the same over columns; returns the sum of the two. Pairs that show the
    same item (several captions of one image) are masked out of each other's negatives.

    Args:
        scores: (B, B); `scores[i, j]` = score of caption i with the item of pair j.
        item_ids: (B,) which item each pair shows: an int tensor or a sequence of hashables.
        margin: subtracted from the positive score (d in the paper; 1.0 was used).

    Returns:
        0-d tensor, `L_rows + L_cols`.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] == 0:
        raise InputError(f"scores must be a non-empty (B, B) matrix; got shape {tuple(scores.shape)}")
    b = scores.shape[0]
    ids = _item_ids_tensor(item_ids, b, scores.device)
    same_item = ids[:, None] == ids[None, :]  # (B, B) True where j shows i's item (incl. j == i)
    diag = torch.eye(b, dtype=torch.bool, device=scores.device)
    # Positives get -margin; other same-item pairs drop out (-inf); the rest are negatives.
    shifted = scores - margin * diag.to(scores.dtype)
    masked = shifted.masked_fill(same_item & ~diag, float("-inf"))
    positive = shifted.diagonal()
    rows = (torch.logsumexp(masked, dim=1) - positive).mean()
    cols = (torch.logsumexp(masked, dim=0) - positive).mean()
    return rows + cols


def _item_ids_tensor(item_ids: Tensor | Sequence, b: int, device: torch.device) -> Tensor:
    if isinstance(item_ids, Tensor):
        ids = item_ids.to(device)
    else:
        item_ids = list(item_ids)
        codes: dict = {}
        ids = torch.tensor([codes.setdefault(x, len(codes)) for x in item_ids], dtype=torch.long, device=device)
    if ids.shape != (b,):
        raise InputError(f"item_ids must have one entry per pair, shape ({b},); got {tuple(ids.shape)}")
    return ids


def l2_alignment_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Teacher-student L2 alignment: mean over the batch of `||norm(student_i) - norm(teacher_i)||_2`.

    Euclidean, not squared. The teacher is detached (frozen); both are L2-normalised here.

    Args:
        student: (N, d) pooled student embeddings (e.g. speech), any scale.
        teacher: (N, d) pooled teacher embeddings (e.g. text), any scale.

    Returns:
        0-d tensor in [0, 2].
    """
    _check_pair(student, teacher, ("student", "teacher"))
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher.detach(), dim=-1)
    # ||s - t|| = sqrt(2 - 2 s.t) for unit rows; computed from the difference for a gradient that
    # stays finite, with a tiny floor so a perfect match does not give NaN gradients.
    sq = (s - t).pow(2).sum(dim=-1)
    return sq.clamp_min(1e-12).sqrt().mean()


def multitask(task_loss: Tensor, align_loss: Tensor, gamma: float = 1.0, beta: float = 1.0) -> Tensor:
    """`gamma * task_loss + beta * align_loss` (teacher-student `L_asr` + `L_L2`; FaST-VGS
    `lambda_f * L_fine + lambda_c * L_coarse` reads the same)."""
    return gamma * task_loss + beta * align_loss


# ---------------------------------------------------------------------------------------------
# distributed


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums each rank's gradient for this rank's rows.

    Every rank computes the same global loss L from the gathered batch, so the local rows get
    `world_size * dL/dx_local`; DistributedDataParallel then averages parameter gradients over
    ranks, which gives exactly the single-process gradient of L (and the logit scale, used
    whole on every rank, gets dL/ds after averaging too).
    """

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return _all_gather_rows(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather_features(*features: Tensor) -> tuple[Tensor, ...]:
    """Concatenate each tensor's rows over all ranks (rank order), with gradient to the local rows.

    A no-op (returns the inputs) when torch.distributed is not initialised or has one rank.
    Ranks may hold different numbers of rows (e.g. a short last batch). Tensors without grad
    (item ids, frozen embeddings) are gathered too, without autograd.

    Args:
        *features: (n_local, ...) tensors on this rank's device (CUDA for nccl, CPU for gloo).

    Returns:
        tuple of (n_global, ...) tensors, one per input.
    """
    if not _distributed():
        return tuple(features)
    if not features:
        return ()
    # One exchange of every tensor's row count (the same collective sequence on every rank).
    local = torch.tensor([x.shape[0] for x in features], device=features[0].device)
    counts = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, local)
    rows = torch.stack(counts).cpu().tolist()  # [rank][feature]
    out = []
    for f, x in enumerate(features):
        sizes = [rows[r][f] for r in range(len(rows))]
        if x.requires_grad and torch.is_grad_enabled():
            out.append(_GatherWithGrad.apply(x, sizes))
        else:
            out.append(_all_gather_rows(x.detach(), sizes))
    return tuple(out)


def _all_gather_rows(x: Tensor, sizes: list[int]) -> Tensor:
    """Rows of `x` from every rank, concatenated; `sizes[r]` = rows on rank r."""
    x = x.contiguous()
    biggest = max(sizes)
    if x.shape[0] < biggest:  # all_gather needs equal shapes: pad, then cut the padding off
        x = torch.cat([x, x.new_zeros((biggest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


# ---------------------------------------------------------------------------------------------
# modules for training


class LogitScale(nn.Module):
    """A learnable logit scale `s = exp(log_s)`, initialised to 1/0.07 and kept at most `max_scale`.

    The parameter is stored in log space (as in CLIP). The clamp is applied to the parameter
    itself (in place, without grad) at each forward pass, so the returned scale is never above
    `max_scale` and the parameter keeps receiving gradient at the bound.
    """

    def __init__(self, init: float = 1 / 0.07, max_scale: float = 100.0, learnable: bool = True):
        super().__init__()
        if not (0 < init <= max_scale):
            raise InputError(f"logit scale init must be in (0, max_scale={max_scale}]; got {init}")
        self.max_scale = float(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)), requires_grad=learnable)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Pull the parameter back to `log(max_scale)` if an optimizer step pushed it above."""
        self.log_scale.clamp_(max=math.log(self.max_scale))

    def forward(self) -> Tensor:
        """0-d tensor: the current scale."""
        self.clamp_()
        return self.log_scale.exp()

    def extra_repr(self) -> str:
        return f"scale={self.log_scale.exp().item():.3f}, max_scale={self.max_scale}"


class ClipLoss(nn.Module):
    """CL over the global batch: `clip_loss(gather(a), gather(b), logit_scale())`."""

    def __init__(self, init_scale: float = 1 / 0.07, max_scale: float = 100.0, learn_scale: bool = True):
        super().__init__()
        self.logit_scale = LogitScale(init_scale, max_scale, learn_scale)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b: (n_local, d) L2-normalised, paired by row -> 0-d loss."""
        a, b = gather_features(a, b)
        return clip_loss(a, b, self.logit_scale())


class CwclLoss(nn.Module):
    """CWCL over the global batch; the locked side is gathered without gradient for the weights.

    `forward(locked, trained, weight_source=None)`: weights come from `weight_source` (another
    frozen source, (n_local, d')) when given, else from `locked`.
    """

    def __init__(
        self,
        init_scale: float = 1 / 0.07,
        max_scale: float = 100.0,
        learn_scale: bool = True,
        symmetric: bool = False,
    ):
        super().__init__()
        self.logit_scale = LogitScale(init_scale, max_scale, learn_scale)
        self.symmetric = symmetric

    def forward(self, locked: Tensor, trained: Tensor, weight_source: Tensor | None = None) -> Tensor:
        """locked, trained: (n_local, d) L2-normalised, paired by row -> 0-d loss."""
        if weight_source is None:
            locked, trained = gather_features(locked, trained)
            weights = cwcl_weights(locked)
        else:
            locked, trained, weight_source = gather_features(locked, trained, weight_source.detach())
            weights = cwcl_weights(weight_source)
        return cwcl_loss(locked, trained, self.logit_scale(), weights=weights, symmetric=self.symmetric)


class MaskedMarginSoftmaxLoss(nn.Module):
    """FaST-VGS coarse loss over the global batch: scores are dot products of the pooled embeddings.

    `forward(audio, image, item_ids)`: (n_local, d), (n_local, d), (n_local,) int item ids
    (global ids: equal ids on different ranks mean the same item). For the fine scorer's (B, B)
    scores call `masked_margin_softmax_loss` directly.
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = margin

    def forward(self, audio: Tensor, image: Tensor, item_ids: Tensor) -> Tensor:
        _check_pair(audio, image, ("audio", "image"))
        audio, image, item_ids = gather_features(audio, image, item_ids)
        return masked_margin_softmax_loss(audio @ image.T, item_ids, self.margin)


class VocabularyLoss(nn.Module):
    """Cross-entropy of a vocabulary head's logits (n, V) against the index of each pair's name (n,),
    with label smoothing: classification over every name at once, so each step sees all V names
    as negatives (the in-batch losses see only the batch's)."""

    def __init__(self, label_smoothing: float = 0.1):
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


class L2AlignmentLoss(nn.Module):
    """Teacher-student L2 loss as a module (per-pair: needs no gathering)."""

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return l2_alignment_loss(student, teacher)


class MultitaskLoss(nn.Module):
    """`gamma * L_task + beta * L_align` with fixed weights (stored for the run config)."""

    def __init__(self, gamma: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.gamma, self.beta = float(gamma), float(beta)

    def forward(self, task_loss: Tensor, align_loss: Tensor) -> Tensor:
        return multitask(task_loss, align_loss, self.gamma, self.beta)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, beta={self.beta}"
