"""The default model's evaluation suite (FSDD zero-shot, Tux Paint caption and speech -> image),
measured through `xmodal_core.evaluate` and stored with the runs.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from trainers.default_model.recipe import FSDD_DEV_SPEAKER
from trainers.default_model.sources import have_set, heldout_tuxpaint
from xmodal_core.errors import DatasetError


def cached_features(encoder: str, records: Sequence, modality: str) -> "Any":
    import torch

    from xmodal_core.data import FeatureCache

    return torch.as_tensor(np.asarray(FeatureCache(encoder).get(records, modality)), dtype=torch.float32)


def embed_records(aligned, records: Sequence, modality: str):
    """(N, d) shared-space embeddings of manifest records through a trained run (cached features
    for its locked towers). Returns a torch tensor."""
    import torch

    cfg = aligned.config
    if modality in aligned.model.towers:
        return torch.as_tensor(aligned.embed(modality, [r.item(modality) for r in records]))
    with torch.no_grad():
        return aligned.model.embed(modality, cached_features(cfg.encoders[modality], records, modality)).float()


def fsdd_zeroshot(aligned, templates: Sequence[str] | str = ("{}",), records: Sequence | None = None) -> dict[str, Any]:
    """FSDD zero-shot: the 10 bare digit words through `templates` (default the k = 1 template
    "{}"), argmax cosine. Returns top1/top5/n, top-1 per speaker, and top-1 without the dev speaker."""
    from xmodal_core.data.builders import DIGIT_WORDS
    from xmodal_core.evaluate import zeroshot
    from xmodal_core.models.aligned import text_encoder_fn

    records = fsdd_records(records)
    emb = embed_records(aligned, records, "speech")
    result = zeroshot(emb, [r.label for r in records], DIGIT_WORDS, templates,
                      text_encoder_fn(aligned.model, aligned.config), groups=[r.speaker or "" for r in records])
    return {"top1": result.top1, "top5": result.top5, "n": result.n, **speaker_top1(result)}


def fsdd_records(records: Sequence | None = None) -> list:
    """The FSDD recordings (all of them unless `records` is given)."""
    from xmodal_core.data import load_manifest

    records = list(records) if records is not None else [r for r in load_manifest("fsdd") if r.audio]
    if not records:
        raise DatasetError("no FSDD recordings to evaluate on: build the set (`xmodal data build fsdd`)")
    return records


def speaker_top1(result) -> dict[str, float]:
    """`top1_<speaker>` for each FSDD speaker, and `top1_without_dev_speaker`, of an
    `evaluate.ClassificationResult` whose groups are the speakers."""
    out = {f"top1_{s.split(':')[-1]}": v for s, v in result.per_group.items()}
    without = result.top1_without([FSDD_DEV_SPEAKER])
    if without is not None:
        out["top1_without_dev_speaker"] = without
    return out


def tuxpaint_gallery(records: Sequence | None = None):
    """The held-out Tux Paint gallery: (image records, one caption record per group, positives
    (queries x images) bool tensor)."""
    from xmodal_core.evaluate import group_positives

    records = list(records) if records is not None else heldout_tuxpaint()
    images = [r for r in records if r.image]
    seen, captions = set(), []
    for r in images:
        if r.group not in seen:
            seen.add(r.group)
            captions.append(r)
    return images, captions, group_positives([r.group for r in captions], [r.group for r in images])


def tuxpaint_caption_to_image(image_aligned) -> dict[str, Any]:
    """Caption -> image retrieval over the held-out fifth of Tux Paint: R@1/5/10, queries, gallery."""
    from xmodal_core.evaluate import retrieval

    images, captions, positives = tuxpaint_gallery()
    gallery = embed_records(image_aligned, images, "image")
    queries = embed_records(image_aligned, captions, "text")
    return {**retrieval(queries, gallery, positives).metrics(), "queries": len(captions), "gallery": len(images)}


def tuxpaint_speech_to_image(speech_aligned, image_aligned) -> dict[str, Any]:
    """People's spoken descriptions (`*_desc.ogg`) -> held-out images, three ways through the same
    image head: the speech head ("model"), Whisper ASR -> MiniLM ("cascade"), and the written
    caption ("text", an upper reference)."""
    import torch

    from xmodal_core import spaces
    from xmodal_core.evaluate import group_positives, retrieval
    from xmodal_core.registry import get_encoder

    records = heldout_tuxpaint()
    images, _, _ = tuxpaint_gallery(records)
    speech = [r for r in records if r.audio]
    if not speech:
        return {}
    positives = group_positives([r.group for r in speech], [r.group for r in images])
    gallery = embed_records(image_aligned, images, "image")
    out: dict[str, Any] = {"queries": len(speech), "gallery": len(images)}
    model_q = embed_records(speech_aligned, speech, "speech")
    out.update(retrieval(model_q, gallery, positives).metrics("model_"))
    transcripts = spaces.transcribe([r.audio for r in speech])
    cascade_q = torch.as_tensor(get_encoder("minilm").encode(transcripts))
    out.update(retrieval(cascade_q, gallery, positives).metrics("cascade_"))
    text_q = embed_records(image_aligned, speech, "text")
    out.update(retrieval(text_q, gallery, positives).metrics("text_"))
    return out


def speech_latency_ms(speech_aligned, n: int = 30) -> float:
    """Median milliseconds to embed one FSDD clip, from its file (decode, tower, head)."""
    from xmodal_core.data import load_manifest

    records = [r for r in load_manifest("fsdd") if r.audio][:: max(1, 2000 // n)][:n]
    speech_aligned.embed_speech([records[0].audio])  # warm-up
    times = []
    for r in records:
        t0 = time.perf_counter()
        speech_aligned.embed_speech([r.audio])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def evaluate_default(speech_run: int, image_run: int, store=None) -> dict[str, dict[str, Any]]:
    """Measure the default model on the targets and store the evaluations with the runs."""
    from xmodal_core.models.aligned import load_aligned
    from xmodal_core.store import Store

    store = store or Store()
    speech, image = load_aligned(speech_run), load_aligned(image_run)
    results = {
        "fsdd_zeroshot": fsdd_zeroshot(speech) if have_set("fsdd") else {
            "skipped": "FSDD is not built here (its recordings live in ../shared/data/fsdd); "
                       "`xmodal data build fsdd --source DIR`, then `xmodal default-model --force`"},
        "tuxpaint_caption_to_image": tuxpaint_caption_to_image(image),
        "tuxpaint_speech_to_image": tuxpaint_speech_to_image(speech, image),
    }
    if "skipped" not in results["fsdd_zeroshot"]:
        results["fsdd_zeroshot"]["ms_per_query"] = speech_latency_ms(speech)
        store.add_evaluation(speech_run, "fsdd", "test",
                             {f"zeroshot_{k}": float(v) for k, v in results["fsdd_zeroshot"].items()})
    store.add_evaluation(image_run, "tuxpaint", "heldout", {f"caption2image_{k}": float(v) for k, v in
                                                            results["tuxpaint_caption_to_image"].items()})
    if results["tuxpaint_speech_to_image"]:
        for run in (speech_run, image_run):
            store.add_evaluation(run, "tuxpaint-desc", "test", {f"speech2image_{k}": float(v) for k, v in
                                                                 results["tuxpaint_speech_to_image"].items()})
    return results
