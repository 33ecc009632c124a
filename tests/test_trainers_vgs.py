"""FaST-VGS on synthetic token features: the scorers, the loss going down, coarse-to-fine retrieval."""
from __future__ import annotations

import math

import pytest
import torch

from trainers.common import DistInfo, OfflineContext
from trainers.vgs import VGSSplit, positives, train
from xmodal_core.models.vgs import FastVGS, VGSConfig, load_vgs


def synthetic_vgs(n_images: int, seed: int, captions: int = 2, p: int = 9, di: int = 20, ds: int = 16,
                  latent: int = 8) -> VGSSplit:
    """Images: P tokens from a latent code; each caption: 5..10 frames carrying the same code
    (fixed random maps shared by every split), plus noise."""
    maps = torch.Generator().manual_seed(0)
    img_map, sp_map = torch.randn(latent, di, generator=maps), torch.randn(latent, ds, generator=maps)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_images, latent, generator=gen)
    image_tokens = (z @ img_map)[:, None, :] + 0.5 * torch.randn(n_images, p, di, generator=gen)
    n = n_images * captions
    lengths = torch.randint(5, 11, (n,), generator=gen)
    t = int(lengths.max())
    speech_mask = torch.arange(t)[None, :] < lengths[:, None]
    image_index = torch.arange(n_images).repeat_interleave(captions)
    speech_tokens = ((z[image_index] @ sp_map)[:, None, :] + 0.5 * torch.randn(n, t, ds, generator=gen))
    speech_tokens = speech_tokens * speech_mask[..., None]
    groups = [f"img{seed}-{int(j)}" for j in image_index]
    return VGSSplit(ids=[f"cap{seed}-{i}" for i in range(n)], groups=groups, speech_tokens=speech_tokens,
                    speech_mask=speech_mask, image_keys=[f"img{seed}-{j}.png" for j in range(n_images)],
                    image_tokens=image_tokens, image_mask=torch.ones(n_images, p, dtype=torch.bool),
                    image_index=image_index)


def tiny_vgs(**overrides) -> VGSConfig:
    base = dict(dataset="synthetic", d_model=32, fine_layers=1, fine_heads=2, dropout=0.0, speech_stride=2,
                fine_batch=8, batch_size=16, lr=3e-3, epochs=4, device="cpu", k_coarse=5)
    base.update(overrides)
    return VGSConfig(**base)


def test_config_round_trip_and_checks():
    cfg = tiny_vgs(lambda_coarse=0.5)
    assert VGSConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Exception, match="multiple of fine_heads"):
        tiny_vgs(d_model=30, fine_heads=4)


def test_positives_cover_every_image_of_the_same_item():
    split = synthetic_vgs(4, seed=1)
    split.groups[2] = split.groups[3] = split.groups[0]  # images 0 and 1 show the same item
    split.item_ids = None
    split.__post_init__()
    pos = positives(split)
    assert pos.shape == (8, 4)
    assert pos[0].tolist() == [True, True, False, False] and pos[2].tolist() == [True, True, False, False]
    assert pos[4].tolist() == [False, False, True, False]


def test_fine_matrix_is_fine_pairs_for_every_pair_and_stride_pools_frames():
    torch.manual_seed(0)
    split = synthetic_vgs(3, seed=1)
    model = FastVGS(tiny_vgs(), speech_dim=16, image_dim=20, image_tokens=9).eval()
    s_tok, s_mask, s_emb = model.speech(split.speech_tokens, split.speech_mask)
    i_tok, i_mask, i_emb = model.image(split.image_tokens, split.image_mask)
    assert s_tok.shape[1] == math.ceil(split.speech_tokens.shape[1] / 2)
    assert torch.equal(s_mask.sum(1), (split.speech_mask.sum(1) + 1) // 2)  # half the frames, rounded up
    assert torch.allclose(s_emb.norm(dim=1), torch.ones(6)) and torch.allclose(i_emb.norm(dim=1), torch.ones(3))
    with torch.no_grad():
        matrix = model.fine_matrix(s_tok, s_mask, i_tok, i_mask, chunk=4)
        for i in range(6):
            for j in range(3):
                one = model.fine_pairs(s_tok[i:i + 1], s_mask[i:i + 1], i_tok[j:j + 1], i_mask[j:j + 1])
                assert torch.allclose(matrix[i, j], one[0], atol=1e-5)


def test_training_lowers_both_losses_and_coarse_to_fine_beats_chance(tmp_path):
    cfg = tiny_vgs(epochs=3)
    train_split, val_split = synthetic_vgs(48, seed=1), synthetic_vgs(8, seed=2)
    ctx = OfflineContext(tmp_path)
    result = train(cfg, train_split, val_split, ctx, info=DistInfo())
    steps = [m for _, _, m in ctx.history if "loss" in m]
    assert result.steps == len(steps) == 3 * (96 // 16) and not result.stopped
    for term in ("loss_coarse", "loss_fine"):
        first, last = [s[term] for s in steps[:4]], [s[term] for s in steps[-4:]]
        assert sum(last) < sum(first), term
    best = result.best
    assert {"s2i_coarse_r@1", "i2s_coarse_r@5", "s2i_ctf_r@10", "ctf_ms_per_query"} <= set(best)
    assert best["s2i_coarse_r@1"] > 3 / 8  # chance is 1/8
    assert best["s2i_ctf_r@5"] >= best["s2i_coarse_r@1"]
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()


def test_coarse_to_fine_equals_reranking_the_coarse_top_k_by_hand(tmp_path):
    cfg = tiny_vgs(epochs=1)
    train_split, val_split = synthetic_vgs(24, seed=1), synthetic_vgs(10, seed=2)
    train(cfg, train_split, None, OfflineContext(tmp_path), info=DistInfo())
    retriever = load_vgs(tmp_path)
    model = retriever.model
    with torch.no_grad():
        s_tok, s_mask, s_emb = model.speech(val_split.speech_tokens, val_split.speech_mask)
        i_tok, i_mask, i_emb = model.image(val_split.image_tokens, val_split.image_mask)
        retriever.index.add([str(j) for j in range(10)], i_emb.numpy())
        for j in range(10):
            retriever._image_tokens[str(j)] = (i_tok[j], i_mask[j])
        from xmodal_core.retrieval import coarse_to_fine

        for q in range(len(val_split)):
            got = coarse_to_fine((s_tok[q:q + 1], s_mask[q:q + 1]), retriever.index, retriever.fine_scores,
                                 k_coarse=4, k=3, query_vector=s_emb[q].numpy())
            top4 = (s_emb[q] @ i_emb.T).topk(4).indices
            fine = model.fine_pairs(s_tok[q:q + 1].expand(4, -1, -1), s_mask[q:q + 1].expand(4, -1), i_tok[top4],
                                    i_mask[top4])
            expected = [str(int(top4[i])) for i in fine.argsort(descending=True)[:3]]
            assert got.ids == expected


def test_stop_and_resume_match_an_uninterrupted_run(tmp_path):
    class StopAfter(OfflineContext):
        def should_stop(self) -> bool:
            return sum("loss" in m for _, _, m in self.history) >= 4

    cfg = tiny_vgs(epochs=2, dropout=0.1)
    data = synthetic_vgs(24, seed=1)
    straight = train(cfg, data, None, OfflineContext(tmp_path / "a"), info=DistInfo())
    assert train(cfg, data, None, StopAfter(tmp_path / "b"), info=DistInfo()).stopped
    resumed = train(cfg, data, None, OfflineContext(tmp_path / "b"), info=DistInfo())
    assert resumed.steps == straight.steps == 6
    a, b = (torch.load(tmp_path / x / "last.pt")["model"] for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
