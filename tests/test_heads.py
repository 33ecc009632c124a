"""Projection heads: shapes, the MLP's layer order, identity, errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xmodal_core.errors import InputError
from xmodal_core.heads import make_head


def test_linear_head_is_one_affine_map():
    head = make_head("linear", 6, 4)
    x = torch.randn(3, 6)
    torch.testing.assert_close(head(x), x @ head.proj.weight.T + head.proj.bias)
    assert (head.kind, head.in_dim, head.out_dim) == ("linear", 6, 4)


def test_mlp_head_is_linear_gelu_linear_dropout_layernorm():
    head = make_head("mlp", 6, 4, dropout=0.2)
    layers = list(head.net)
    assert [type(m) for m in layers] == [nn.Linear, nn.GELU, nn.Linear, nn.Dropout, nn.LayerNorm]
    assert layers[0].in_features == 6 and layers[2].out_features == 4 and layers[3].p == 0.2
    head.eval()
    x = torch.randn(5, 6)
    h = layers[2](torch.nn.functional.gelu(layers[0](x)))
    expected = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(head(x), expected * layers[4].weight + layers[4].bias)


def test_outputs_are_not_normalised_and_gradients_flow():
    head = make_head("linear", 8, 8)
    with torch.no_grad():
        head.proj.weight.mul_(10)
    x = torch.randn(4, 8)
    out = head(x)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(4))
    out.sum().backward()
    assert head.proj.weight.grad is not None


def test_identity_head_passes_through_and_needs_equal_dims():
    head = make_head("identity", 5, 5)
    x = torch.randn(2, 5)
    assert head(x) is x and list(head.parameters()) == []
    with pytest.raises(InputError, match="in_dim == out_dim"):
        make_head("identity", 5, 6)


def test_bad_kind_and_dims_are_rejected():
    with pytest.raises(InputError, match="linear, mlp, identity"):
        make_head("transformer", 4, 4)
    with pytest.raises(InputError, match="in_dim"):
        make_head("linear", 0, 4)
    with pytest.raises(InputError, match="dropout"):
        make_head("mlp", 4, 4, dropout=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_heads_run_on_cuda():
    head = make_head("mlp", 6, 4).cuda().eval()
    assert head(torch.randn(2, 6, device="cuda")).device.type == "cuda"
