"""The shared-space FaST-VGS: pairs from adaptation, a model that starts as the direct path, a run
trained and searched end to end, and the shipped run that makes coarse-to-fine work out of the box."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_adapt import TUX_FROG, _captioned_gallery, home  # noqa: F401 - home: the fixture, shared
from xmodal_core.errors import InputError

pytestmark = pytest.mark.slow


def _rocket_gallery(tmp_path):
    """Four real pictures: "A rocket.", "A coffee.", "A astronaut." and a cat captioned just "rocket"."""
    g = _captioned_gallery(tmp_path, ["rocket", "coffee", "astronaut", "cat"])
    g.with_captions({it.id: ("rocket" if "cat" in it.image else f"A {Path(it.image).stem}.") for it in g.items})
    g.save()
    return g


def test_a_clip_names_the_pictures_whose_caption_says_what_it_says(home, tmp_path):
    from xmodal_core.adapt.pairs import gallery_pairs

    g = _rocket_gallery(tmp_path)
    pairs = gallery_pairs(g, voices=8)
    caption = {it.id: it.caption for it in g.items}
    assert len(pairs.split("val")) == 3 and len(pairs.split("train")) == 24  # 3 entries x (8 + 1 held out)
    seen = set()
    for r, pos, entry in zip(pairs.records, pairs.positives, pairs.entries):
        named = {caption[pairs.item_ids[j]] for j in pos}
        if r.text == "a rocket":  # said in full: only the picture captioned so
            assert named == {"A rocket."}
        elif r.text == "rocket":  # the bare name fits both the rocket and the cat called "rocket"
            assert named == {"A rocket.", "rocket"}
        else:
            assert named == {f"A {entry}."}
        seen.add(r.text)
        assert Path(r.audio).is_file()
    assert {"a rocket", "rocket"} <= seen  # both forms were spoken (the forms are drawn per clip)


def test_an_untrained_shared_vgs_ranks_exactly_as_the_direct_path(home, tmp_path):
    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import Record
    from xmodal_core.models.vgs import SharedVGS, VGSConfig
    from xmodal_core.registry import get_encoder
    from xmodal_core.search import Query, search
    from xmodal_core.search.direct import adapted_state, fused_item_embeddings
    from xmodal_core.spaces import current_space, load_run_model

    g = _rocket_gallery(tmp_path)
    query = Query.from_input("speech", str(TUX_FROG))
    direct = search(g, query, "direct", k=4)

    cfg = VGSConfig(coarse="shared", encoders={"speech": "whisper-tiny.en-tail", "image": "efficientnet-lite0"},
                    d_model=32, fine_layers=1, fine_heads=4)
    model = SharedVGS(cfg, speech_dim=384, image_dim=1280, image_tokens=49).eval()
    tok, mask = get_encoder("whisper-tiny.en-tail").encode_tokens([query.audio])
    i_tok, i_mask = FeatureCache("efficientnet-lite0").get_tokens([Record(id=it.id, image=it.image) for it in g.items],
                                                                  "image")
    model.set_image_basis(i_tok, i_mask)
    rows, ok = fused_item_embeddings(g, current_space())
    assert ok.all()
    with torch.no_grad():
        pooled = (tok * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        q = load_run_model(adapted_state(g.name).run_dir).model.embed("speech", pooled)
        s_c, i_c = model.speech_coarse(q), model.item_coarse(torch.from_numpy(rows))
        s_kv, s_m = model.speech_memory(tok, mask)
        i_kv, i_m = model.item_memory(i_tok, i_mask)
        fine = model.fine_scores(s_kv, s_m, s_c, i_kv[None], i_m[None], i_c[None])[0]
    coarse = (s_c @ i_c.T)[0]
    # the direct path's scores, through the product path, are the coarse ones; an untrained fine scorer adds 0
    assert [h.item.id for h in direct.hits] == [g.items[i].id for i in torch.argsort(-coarse).tolist()]
    assert np.allclose([h.score for h in direct.hits], torch.sort(coarse, descending=True).values.numpy(), atol=1e-5)
    assert torch.allclose(fine, model.coarse_scale() * coarse, atol=1e-4)


def test_a_shared_vgs_run_trains_in_the_store_and_answers_coarse_to_fine(home, tmp_path):
    from dataclasses import replace

    from xmodal_core.adapt.shipped_vgs import build, load_recipe
    from xmodal_core.models.vgs import SharedVGS, load_vgs
    from xmodal_core.search import Query, search
    from xmodal_core.spaces import Space, shared_store

    g = _rocket_gallery(tmp_path)
    cfg = replace(load_recipe(), gallery=g.name, pair_voices=3, d_model=32, fine_layers=1, batch_size=4, epochs=2,
                  negatives=2, hard_k=3, k_coarse=3, warmup_steps=0)
    run_id = build(cfg)
    store = shared_store()
    assert store.get_run(run_id).status == "completed"
    metrics = {e.metric: e.value for e in store.evaluations(run_id)}
    assert 0.0 <= metrics["s2i_ctf_r@1"] <= 1.0 and 0.0 <= metrics["s2i_coarse_r@10"] <= 1.0
    loaded = load_vgs(run_id)
    assert isinstance(loaded.model, SharedVGS)
    saved = json.loads(Path(loaded.run_dir, "config.json").read_text())
    assert saved["source"]["gallery"] == g.name and saved["source"]["items"] == 4

    space = Space(vgs_run=run_id)
    query = Query.from_input("speech", str(TUX_FROG))
    ctf = search(g, query, "coarse-to-fine", k=2, k_coarse=3, space=space)
    stages = [name for name, _ in ctf.timings]
    assert len(ctf.hits) == 2 and ctf.path == "coarse-to-fine" and ctf.heard_as
    assert "coarse top-3 (vector index)" in stages and "fine rerank of 3 (one batch)" in stages
    fine = search(g, query, "fine", k=4, space=space)
    assert sorted(h.item.id for h in fine.hits) == sorted(it.id for it in g.items)
    # CTF reranks the coarse top 3 with the same scorer: its order is the fine order restricted to them
    coarse3 = {h.item.id for h in search(g, query, "direct", k=3).hits}
    assert [h.item.id for h in ctf.hits] == [h.item.id for h in fine.hits if h.item.id in coarse3][:2]
    with pytest.raises(InputError, match="spoken query"):
        search(g, Query.from_input("text", "a rocket"), "coarse-to-fine", space=space)


def test_the_shipped_vgs_matches_its_recipe_and_finds_a_spoken_frog(home):
    from xmodal_core.adapt import shipped_vgs
    from xmodal_core.gallery import open_gallery
    from xmodal_core.search import Query, search
    from xmodal_core.spaces import shared_store

    info = shipped_vgs.shipped_info()
    assert info is not None, "assets/models/xmodal-default-vgs is missing: python -m xmodal_core.adapt.shipped_vgs --build"
    assert info["recipe_digest"] == shipped_vgs.recipe_digest(), \
        "the committed FaST-VGS was trained with another recipe: rebuild it (python -m xmodal_core.adapt.shipped_vgs --build)"
    run_id = shipped_vgs.install()
    assert shipped_vgs.install() == run_id  # installed once
    assert shared_store().get_run(run_id).status == "completed"
    result = search(open_gallery("default"), Query.from_input("speech", str(TUX_FROG)), "coarse-to-fine", k=10)
    assert result.model.startswith(f"FaST-VGS run {run_id}")
    assert any((h.item.caption or "").lower().strip(". ").removeprefix("a ") == "frog" for h in result.hits)
    assert result.transcript is None  # no ASR ran


def test_bad_shared_vgs_settings_are_refused_with_the_reason():
    from xmodal_core.models.vgs import VGSConfig

    with pytest.raises(InputError, match="coarse must be one of"):
        VGSConfig(coarse="bogus")
    with pytest.raises(InputError, match="negatives"):
        VGSConfig(coarse="shared", negatives=60, hard_k=50)
