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


def test_a_vocabulary_head_lands_on_the_name_it_is_sure_of_and_between_names_it_is_not():
    import torch.nn.functional as F

    from xmodal_core.heads import VocabularyHead, make_head
    from xmodal_core.registry import get_encoder

    names = ["frog", "dog", "violin"]
    head = make_head("vocab", 384, 384, vocabulary_size=3, hidden_dim=16)
    assert isinstance(head, VocabularyHead)
    emb = torch.as_tensor(get_encoder("minilm").encode(names))
    head.names.copy_(F.normalize(emb, dim=-1))
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))  # sure: "frog"
    head.eval()
    out = head(torch.randn(2, 384))
    assert torch.allclose(F.normalize(out, dim=-1), head.names[0].expand(2, -1), atol=1e-3)
    with torch.no_grad():
        head.out.bias.copy_(torch.tensor([2.0, 2.0, -20.0]))  # torn between frog and dog
    mixed = F.normalize(head(torch.randn(1, 384)), dim=-1)[0]
    expected = F.normalize(head.names[0] + head.names[1], dim=-1)
    assert torch.allclose(mixed, expected, atol=1e-3)
    assert head.targets(emb[[2, 0]]).tolist() == [2, 0]  # each text's own name


def test_a_vocabulary_head_needs_its_names_and_the_ce_loss():
    from xmodal_core.heads import make_head
    from xmodal_core.models.aligned import AlignConfig

    with pytest.raises(InputError, match="vocabulary"):
        make_head("vocab", 384, 384)
    with pytest.raises(InputError, match="ce loss"):
        AlignConfig(towers=("speech", "text"), encoders={"speech": "whisper-tiny.en-tail", "text": "minilm"},
                    head="vocab", loss="cwcl")
    with pytest.raises(InputError, match="head-less text tower"):
        AlignConfig(towers=("speech", "image"), encoders={"speech": "whisper-tiny.en-tail",
                                                          "image": "efficientnet-lite0"},
                    head="vocab", loss="ce", no_head=())


def test_a_vocabulary_head_learning_only_new_rows_matches_the_plain_head_and_keeps_the_rest_fixed():
    import copy

    from xmodal_core.heads import make_head

    torch.manual_seed(0)
    plain = make_head("vocab", 16, 8, vocabulary_size=7, hidden_dim=12).eval()
    split = copy.deepcopy(plain)
    split.learn_only([5, 1])
    assert [n for n, p in split.named_parameters() if p.requires_grad] == ["new_weight", "new_bias"]
    x = torch.randn(4, 16)
    assert torch.allclose(split.logits(x), plain.logits(x), atol=1e-6)  # the same function
    plain.logits(x).square().sum().backward()
    split.logits(x).square().sum().backward()
    assert torch.allclose(split.new_weight.grad, plain.out.weight.grad[[1, 5]], atol=1e-5)  # the same gradient
    assert torch.allclose(split.new_bias.grad, plain.out.bias.grad[[1, 5]], atol=1e-5)

    with torch.no_grad():
        split.new_weight.add_(1.0)
    state = split.state_dict()
    assert sorted(state) == sorted(plain.state_dict())  # the plain layout: rows folded back into `out`
    assert torch.equal(state["out.weight"][[1, 5]], split.new_weight.detach())
    assert torch.equal(state["out.weight"][[0, 2, 3, 4, 6]], plain.out.weight.detach()[[0, 2, 3, 4, 6]])
    fresh = make_head("vocab", 16, 8, vocabulary_size=7, hidden_dim=12)
    fresh.load_state_dict(state)  # loads into a plain head ...
    again = copy.deepcopy(plain)
    again.learn_only([1, 5])
    again.load_state_dict(state)  # ... and into a learning one (a resumed run)
    assert torch.equal(again.new_weight, split.new_weight) and torch.allclose(again.logits(x), fresh.eval().logits(x))
    with pytest.raises(InputError, match="row indexes"):
        copy.deepcopy(plain).learn_only([7])
