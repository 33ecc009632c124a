"""The papers' losses against loop computations on small inputs, their properties, and DDP gathering."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from xmodal_core.errors import InputError
from xmodal_core.losses import (
    ClipLoss,
    CwclLoss,
    L2AlignmentLoss,
    LogitScale,
    MaskedMarginSoftmaxLoss,
    MultitaskLoss,
    clip_loss,
    cwcl_loss,
    cwcl_weights,
    gather_features,
    l2_alignment_loss,
    masked_margin_softmax_loss,
    multitask,
)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def as_lists(x: torch.Tensor) -> list[list[float]]:
    return x.detach().tolist()


def dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v))


def log_softmax_at(values: list[float], j: int) -> float:
    return values[j] - math.log(sum(math.exp(v) for v in values))


# --- loop references: plain Python, one pair at a time ------------------------------------


def clip_reference(a, b, s: float) -> float:
    a, b = as_lists(a), as_lists(b)
    n = len(a)
    logits = [[s * dot(a[i], b[j]) for j in range(n)] for i in range(n)]
    rows = -sum(log_softmax_at(logits[i], i) for i in range(n)) / n
    cols = -sum(log_softmax_at([logits[i][j] for i in range(n)], j) for j in range(n)) / n
    return (rows + cols) / 2


def cwcl_reference(locked, trained, s: float, weights=None, symmetric=False) -> float:
    l, t = as_lists(locked), as_lists(trained)
    n = len(l)
    if weights is None:
        norm = [math.sqrt(dot(v, v)) for v in l]
        weights = [[(1 + dot(l[i], l[j]) / (norm[i] * norm[j])) / 2 for j in range(n)] for i in range(n)]
    else:
        weights = as_lists(weights)
    logits = [[s * dot(l[i], t[j]) for j in range(n)] for i in range(n)]
    l2t = 0.0
    for i in range(n):
        total = sum(weights[i])
        l2t -= sum(weights[i][j] / total * log_softmax_at(logits[i], j) for j in range(n)) / n
    t2l = 0.0
    for j in range(n):
        column = [logits[i][j] for i in range(n)]
        if symmetric:
            total = sum(weights[j])
            t2l -= sum(weights[j][i] / total * log_softmax_at(column, i) for i in range(n)) / n
        else:
            t2l -= log_softmax_at(column, j) / n
    return (l2t + t2l) / 2


def masked_margin_reference(scores, item_ids, margin: float) -> float:
    s = as_lists(scores)
    b = len(s)
    rows = cols = 0.0
    for i in range(b):
        pos = math.exp(s[i][i] - margin)
        neg = sum(math.exp(s[i][j]) for j in range(b) if item_ids[j] != item_ids[i])
        rows -= math.log(pos / (pos + neg)) / b
        neg = sum(math.exp(s[j][i]) for j in range(b) if item_ids[j] != item_ids[i])
        cols -= math.log(pos / (pos + neg)) / b
    return rows + cols


# --- CL ------------------------------------------------------------------------------------


def test_clip_loss_matches_a_loop_over_pairs():
    a, b = unit(5, 3, 0), unit(5, 3, 1)
    assert clip_loss(a, b, 7.5).item() == pytest.approx(clip_reference(a, b, 7.5), rel=1e-10)


def test_clip_loss_hand_computed_two_pairs():
    # a = b = identity rows: logits [[s, 0], [0, s]]; each CE = log(1 + e^-s)
    eye = torch.eye(2, dtype=torch.float64)
    assert clip_loss(eye, eye, 2.0).item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-12)


def test_clip_loss_takes_a_tensor_scale_and_passes_gradient_to_it():
    a, b = unit(4, 3, 2), unit(4, 3, 3)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    clip_loss(a, b, scale).backward()
    eps = 1e-6
    numeric = (clip_reference(a, b, 3.0 + eps) - clip_reference(a, b, 3.0 - eps)) / (2 * eps)
    assert scale.grad.item() == pytest.approx(numeric, rel=1e-5)


def test_clip_loss_rejects_unpaired_shapes():
    with pytest.raises(InputError, match="same shape"):
        clip_loss(unit(4, 3, 0), unit(5, 3, 1), 1.0)
    with pytest.raises(InputError, match="scalar"):
        clip_loss(unit(4, 3, 0), unit(4, 3, 1), torch.ones(2))


# --- CWCL ----------------------------------------------------------------------------------


def test_cwcl_default_weights_are_half_one_plus_cosine_of_locked():
    x = unit(4, 3, 4) * torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=torch.float64)  # any scale
    rows = as_lists(F.normalize(x, dim=-1))
    w = cwcl_weights(x)
    for i in range(4):
        for j in range(4):
            assert w[i, j].item() == pytest.approx((1 + dot(rows[i], rows[j])) / 2, abs=1e-12)
    assert not w.requires_grad


@pytest.mark.parametrize("n", [7, 600, 1025])  # 600 and 1025 take the blocked CPU route
def test_cwcl_weights_of_any_batch_size_equal_the_matmul_formula(n):
    x = unit(n, 9, 33)
    w = cwcl_weights(x)
    assert w.is_contiguous()
    torch.testing.assert_close(w, (1 + x @ x.T) / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(w, w.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_cwcl_matches_a_loop_over_pairs(symmetric):
    locked, trained = unit(5, 4, 5), unit(5, 4, 6)
    got = cwcl_loss(locked, trained, 6.0, symmetric=symmetric).item()
    assert got == pytest.approx(cwcl_reference(locked, trained, 6.0, symmetric=symmetric), rel=1e-10)


@pytest.mark.parametrize("symmetric", [False, True])
def test_cwcl_with_given_asymmetric_weights_matches_the_loop(symmetric):
    locked, trained = unit(4, 3, 7), unit(4, 3, 8)
    g = torch.Generator().manual_seed(9)
    weights = torch.rand(4, 4, generator=g, dtype=torch.float64)
    got = cwcl_loss(locked, trained, 4.0, weights=weights, symmetric=symmetric).item()
    want = cwcl_reference(locked, trained, 4.0, weights=weights, symmetric=symmetric)
    assert got == pytest.approx(want, rel=1e-10)


GIVEN = torch.rand(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
FROM_A = cwcl_weights(unit(5, 3, 40))  # constant weights, so finite differences on `a` leave them alone


@pytest.mark.parametrize(
    "loss",
    [
        lambda a, b, s: clip_loss(a, b, s),
        lambda a, b, s: cwcl_loss(a, b, s, weights=FROM_A),
        lambda a, b, s: cwcl_loss(a, b, s, weights=FROM_A, symmetric=True),
        lambda a, b, s: cwcl_loss(a, b, s, weights=GIVEN, symmetric=True),
    ],
    ids=["CL", "CWCL", "CWCL-symmetric", "CWCL-asymmetric-weights"],
)
def test_hand_written_backward_passes_gradcheck(loss):
    a = unit(5, 3, 40).requires_grad_(True)
    b = unit(5, 3, 41).requires_grad_(True)
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (a, b, s))


@pytest.mark.parametrize("symmetric", [False, True])
def test_default_weights_backward_passes_gradcheck_on_the_trained_side(symmetric):
    # The default weights move with `locked` (detached by design), so check d/d trained and d/d scale.
    locked = unit(5, 3, 42)
    b = unit(5, 3, 43).requires_grad_(True)
    s = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b, s: cwcl_loss(locked, b, s, symmetric=symmetric), (b, s))


@pytest.mark.parametrize("symmetric", [False, True])
def test_cwcl_with_identity_weights_equals_clip_loss(symmetric):
    locked, trained = unit(6, 5, 10), unit(6, 5, 11)
    eye = torch.eye(6, dtype=torch.float64)
    got = cwcl_loss(locked, trained, 9.0, weights=eye, symmetric=symmetric)
    assert got.item() == pytest.approx(clip_loss(locked, trained, 9.0).item(), rel=1e-12)


def test_cwcl_gradient_does_not_reach_locked_through_the_weights():
    base_locked, trained = unit(5, 4, 12), unit(5, 4, 13)
    # Through S only: weights built from a detached copy are constants by construction.
    locked_ref = base_locked.clone().requires_grad_(True)
    const_w = (1 + base_locked @ base_locked.T) / 2
    cwcl_loss(locked_ref, trained, 5.0, weights=const_w).backward()
    locked = base_locked.clone().requires_grad_(True)
    cwcl_loss(locked, trained, 5.0).backward()
    assert torch.allclose(locked.grad, locked_ref.grad, atol=1e-12)


def test_cwcl_frozen_locked_gets_no_gradient_and_weights_none():
    locked, trained = unit(5, 4, 14), unit(5, 4, 15).requires_grad_(True)
    weights = torch.rand(5, 5, dtype=torch.float64, requires_grad=True)
    cwcl_loss(locked, trained, 5.0, weights=weights).backward()
    assert weights.grad is None and locked.grad is None
    assert trained.grad is not None and torch.isfinite(trained.grad).all()


def test_cwcl_module_weight_source_gets_no_gradient():
    source = unit(4, 6, 16).requires_grad_(True)
    trained = unit(4, 3, 17).requires_grad_(True)
    loss = CwclLoss()(unit(4, 3, 18), trained, weight_source=source)
    loss.backward()
    assert source.grad is None and trained.grad is not None


def test_cwcl_rejects_bad_weights():
    locked, trained = unit(3, 2, 0), unit(3, 2, 1)
    with pytest.raises(InputError, match=r"\(3, 3\)"):
        cwcl_loss(locked, trained, 1.0, weights=torch.ones(2, 2))
    with pytest.raises(InputError, match="non-negative"):
        cwcl_loss(locked, trained, 1.0, weights=-torch.ones(3, 3))


# --- masked margin softmax ----------------------------------------------------------------


def test_masked_margin_all_distinct_items_equals_closed_form():
    g = torch.Generator().manual_seed(20)
    scores = torch.randn(5, 5, generator=g, dtype=torch.float64)
    got = masked_margin_softmax_loss(scores, torch.arange(5), margin=1.0)
    # Closed form: with no shared items the loss is CE(rows) + CE(cols) of S - margin * I.
    shifted = scores - torch.eye(5, dtype=torch.float64)
    closed = F.cross_entropy(shifted, torch.arange(5)) + F.cross_entropy(shifted.T, torch.arange(5))
    assert got.item() == pytest.approx(closed.item(), rel=1e-12)
    assert got.item() == pytest.approx(masked_margin_reference(scores, list(range(5)), 1.0), rel=1e-10)


def test_masked_margin_masks_captions_of_the_same_item():
    g = torch.Generator().manual_seed(21)
    scores = torch.randn(6, 6, generator=g, dtype=torch.float64)
    items = ["dog", "dog", "cat", "bird", "cat", "dog"]
    got = masked_margin_softmax_loss(scores, items, margin=0.5)
    assert got.item() == pytest.approx(masked_margin_reference(scores, items, 0.5), rel=1e-10)
    as_ints = masked_margin_softmax_loss(scores, torch.tensor([0, 0, 1, 2, 1, 0]), margin=0.5)
    assert as_ints.item() == pytest.approx(got.item(), rel=1e-12)


def test_masked_margin_module_scores_pooled_embeddings():
    audio, image = unit(4, 3, 22), unit(4, 3, 23)
    items = torch.tensor([0, 1, 1, 2])
    got = MaskedMarginSoftmaxLoss(margin=1.0)(audio, image, items)
    assert got.item() == pytest.approx(masked_margin_reference(audio @ image.T, items.tolist(), 1.0), rel=1e-10)


def test_masked_margin_rejects_non_square_scores():
    with pytest.raises(InputError, match=r"\(B, B\)"):
        masked_margin_softmax_loss(torch.zeros(2, 3), [0, 1])
    with pytest.raises(InputError, match="one entry per pair"):
        masked_margin_softmax_loss(torch.zeros(2, 2), [0, 1, 2])


# --- teacher-student ----------------------------------------------------------------------


def test_l2_alignment_is_mean_euclidean_distance_of_normalised_rows():
    g = torch.Generator().manual_seed(24)
    student = torch.randn(4, 3, generator=g, dtype=torch.float64) * 3
    teacher = torch.randn(4, 3, generator=g, dtype=torch.float64)
    expected = 0.0
    for s, t in zip(as_lists(student), as_lists(teacher)):
        ns, nt = math.sqrt(dot(s, s)), math.sqrt(dot(t, t))
        expected += math.sqrt(sum((x / ns - y / nt) ** 2 for x, y in zip(s, t))) / 4
    assert l2_alignment_loss(student, teacher).item() == pytest.approx(expected, rel=1e-10)
    # hand-checkable: orthogonal unit rows are sqrt(2) apart
    assert l2_alignment_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item() == pytest.approx(
        math.sqrt(2)
    )


def test_l2_alignment_teacher_is_frozen_and_perfect_match_has_finite_gradient():
    teacher = unit(3, 4, 25).requires_grad_(True)
    student = (teacher.detach() * 2).requires_grad_(True)
    loss = L2AlignmentLoss()(student, teacher)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    assert teacher.grad is None and torch.isfinite(student.grad).all()


def test_multitask_is_the_weighted_sum():
    task, align = torch.tensor(2.0), torch.tensor(3.0)
    assert multitask(task, align, gamma=0.5, beta=4.0).item() == pytest.approx(13.0)
    assert MultitaskLoss(gamma=0.1, beta=1.0)(task, align).item() == pytest.approx(3.2)


# --- logit scale ---------------------------------------------------------------------------


def test_logit_scale_starts_at_one_over_0_07_and_is_capped_at_100():
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(math.log(500.0))  # as an optimizer step could
    value = scale()
    assert value.item() == pytest.approx(100.0, rel=1e-6)
    value.backward()
    assert scale.log_scale.grad.item() == pytest.approx(100.0, rel=1e-5)  # still learning at the cap


def test_clip_loss_module_trains_its_scale():
    module = ClipLoss()
    loss = module(unit(4, 3, 26).float(), unit(4, 3, 27).float())
    loss.backward()
    assert module.logit_scale.log_scale.grad is not None


# --- devices -------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_run_on_cuda_like_on_cpu():
    a, b = unit(8, 4, 28).float(), unit(8, 4, 29).float()
    items = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    for fn in (
        lambda x, y: clip_loss(x, y, 10.0),
        lambda x, y: cwcl_loss(x, y, 10.0, symmetric=True),
        lambda x, y: masked_margin_softmax_loss(x @ y.T, items.to(x.device)),
        l2_alignment_loss,
    ):
        assert fn(a.cuda(), b.cuda()).item() == pytest.approx(fn(a, b).item(), rel=1e-4)


# --- distributed ---------------------------------------------------------------------------


def test_gather_features_is_a_no_op_without_a_process_group():
    a, b = unit(3, 2, 30), unit(3, 2, 31)
    out = gather_features(a, b)
    assert out[0] is a and out[1] is b


def _tower_pair(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.ModuleDict(
        {"a": torch.nn.Linear(6, 4), "b": torch.nn.Linear(5, 4), "loss": ClipLoss(), "cwcl": CwclLoss()}
    )
    return model.double()


def _losses(model, xa, xb, locked):
    fa = F.normalize(model["a"](xa), dim=-1)
    fb = F.normalize(model["b"](xb), dim=-1)
    return model["loss"](fa, fb) + model["cwcl"](locked, fb)


class _Both(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, xa, xb, locked):
        return _losses(self.model, xa, xb, locked)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, xa, xb, locked, splits):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback: both ranks are on this machine
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        start, stop = splits[rank], splits[rank + 1]
        model = DDP(_Both(_tower_pair(0)))
        loss = model(xa[start:stop], xb[start:stop], locked[start:stop])
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.module.model.named_parameters()}
        torch.save({"loss": loss.detach(), "grads": grads}, f"{out_dir}/rank{rank}.pt")
    except BaseException:
        dist.destroy_process_group()
        raise
    from trainers.common import leave_distributed

    leave_distributed(0)  # a plain exit after DDP can abort in gloo's teardown (see its docstring)


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_loss_and_gradients(tmp_path):
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(32)
    n = 8
    xa = torch.randn(n, 6, generator=g, dtype=torch.float64)
    xb = torch.randn(n, 5, generator=g, dtype=torch.float64)
    locked = F.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1)
    splits = [0, 3, n]  # unequal shards, as a short last batch gives
    mp.spawn(
        _ddp_worker,
        args=(2, str(tmp_path / "pg"), str(tmp_path), xa, xb, locked, splits),
        nprocs=2,
        join=True,
    )
    single = _tower_pair(0)
    loss = _losses(single, xa, xb, locked)
    loss.backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-12)
        for name, p in single.named_parameters():
            assert torch.allclose(got["grads"][name], p.grad, rtol=1e-9, atol=1e-12), name
