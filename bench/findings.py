"""The papers' findings, reproduced in small, evaluated on real human speech.

    python -m bench.findings            # full training sets -> bench/results/findings.json
    python -m bench.findings --quick    # 200 training pairs, 1-2 epochs -> findings_quick.json
    python -m bench.findings --only maestro vgs

Sections (each one's data split is in its JSON; one failing section does not stop the others,
but makes the exit status non-zero):

- cwcl_vs_cl: zero-shot top-1 for k = 1, 5, 10 simple templates and the 48 general ones, CWCL
  against CL: FSDD spoken digits from `trainers.experiments.cwcl_vs_cl` (the default speech
  recipe), Tux Paint categories and Fashion-MNIST with the bench's image-text run trained with
  each loss (CWCL paper: CWCL loses less as templates shrink).
- lock_location: none / speech / text / both locked, speech-text, from
  `trainers.experiments.lock_table` (full run only: it trains on the default model's speech set).
- maestro: t-SNE of speech and text embeddings before (raw Whisper, raw MiniLM) and after
  alignment (the shared space Search uses: the default model in the full run), the modality
  gap, and the retrieval probe (direct cosine vs ASIF: 100 trials,
  k = 90 of 900 anchors, p = 8, scaled to the data by `metrics.retrieval_probe`) on the raw
  towers and in the aligned space, for speech-text and image-text pairs.
- teacher_student: S -> T and T -> S retrieval of a speech student trained with the L2 loss to a
  frozen MiniLM teacher (the paper found T -> S higher), next to the CWCL run.
- vgs: FaST-VGS coarse / fine / coarse-to-fine R@k and ms per query for (lambda_c, lambda_f) in
  {(1, 0), (0.1, 1), (1, 1)}, each trained on an equal, CPU-sized budget (640 pairs, 2 epochs in
  the full run), queries spoken by people (and, apart, by held-out synthetic voices) against
  all 1,033 Tux Paint images.
- image_ceiling: Tux Paint caption -> image for the default image recipe's two parts (trained
  head, ImageNet class prior) alone, mixed at the recipe's weight, at the best fixed weight and
  with a per-query oracle weight, over 5 seeds (`trainers.experiments.image_ceiling`; full run
  only: it trains on the default model's image set).
- domain_gap: every search mode (cascade, shared-space coarse, VGS coarse / CTF) on speech by
  people vs held-out synthetic voices, same gallery: models trained on synthetic speech, used
  on real speech.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import machine_info, write_result  # noqa: E402
from bench.training import (ensure_dataset, ensure_run, ensure_standard_run, log, shared_space_runs,  # noqa: E402
                            spoken_tuxpaint, standard_config)

SECTIONS = ("cwcl_vs_cl", "lock_location", "image_ceiling", "maestro", "teacher_student", "vgs", "domain_gap")
HUMAN_SPEECH_SETS = ("tuxpaint", "ktuberling", "librivox")  # real speech with a distinct text per clip


# ============================================================================ data

def human_speech_text_pairs() -> list:
    """Records with speech recorded by people and its text: Tux Paint descriptions (split test),
    ktuberling words, LibriVox sentences (all test)."""
    from xmodal_core.data.manifest import load_manifest

    out = []
    for name in HUMAN_SPEECH_SETS:
        out += [r for r in load_manifest(ensure_dataset(name), split="test") if r.audio and r.text]
    return out


def _pooled(encoder: str, records: list, modality: str) -> np.ndarray:
    from xmodal_core.data.features import FeatureCache

    return FeatureCache(encoder).get(records, modality)


def _aligned_embed(run: dict, modality: str, features: np.ndarray) -> np.ndarray:
    from xmodal_core.models.aligned import load_aligned

    aligned = load_aligned(run["run_dir"])
    with torch.no_grad():
        return aligned.model.embed(modality, torch.as_tensor(features)).float().numpy()


# ============================================================================ sections

def _default_model_ready() -> str | None:
    """None when the default model (whose synthetic speech set the experiments train on) is
    trained or could be trained now; else why not."""
    try:
        from trainers.default_model import ensure_default_model
    except ImportError as exc:
        return f"trainers.default_model is not available ({exc})"
    try:
        ensure_default_model()
    except Exception as exc:  # noqa: BLE001 - recorded: the section depends on another module
        return f"ensure_default_model() failed: {type(exc).__name__}: {exc}"
    return None


QUICK_SKIP = ("skipped in the quick variant: trains on the default model's synthetic speech set "
              "(building it takes ~15 min on 2 cores); the full run measures it")


def section_cwcl_vs_cl(quick: bool) -> dict[str, Any]:
    """Zero-shot top-1 with k = 1, 5, 10 simple templates and the 48 general ones, CWCL vs CL.

    Speech digits (FSDD): `trainers.experiments.cwcl_vs_cl` (the default speech recipe trained
    with each loss). Images (Tux Paint categories, Fashion-MNIST): the bench's image-text run
    trained with each loss (`standard_config("image-text-cwcl")`, loss swapped)."""
    out: dict[str, Any] = {"image": _image_zero_shot(quick)}
    if quick:
        out["speech_fsdd"] = {"skipped": QUICK_SKIP}
        return out
    try:
        from trainers.experiments import cwcl_vs_cl
    except ImportError as exc:
        out["speech_fsdd"] = {"blocked": f"trainers.experiments is not available ({exc})"}
        return out
    why = _default_model_ready()
    out["speech_fsdd"] = {"blocked": why} if why else {
        **cwcl_vs_cl(), "data": "FSDD spoken digits by 4 people (split test, 2,000 clips); trained on the default "
                                "model's synthetic speech set (trainers.experiments.cwcl_vs_cl)"}
    return out


def _image_zero_shot(quick: bool) -> dict[str, Any]:
    from xmodal_core.models.aligned import load_aligned, text_encoder_fn
    from xmodal_core import analysis
    from xmodal_core.zeroshot import load_templates, template_robustness

    tts = spoken_tuxpaint(quick)
    kind, cwcl_cfg = standard_config("image-text-cwcl", quick, tts)
    runs = {"cwcl": ensure_standard_run("image-text-cwcl", quick),
            "cl": ensure_run(kind, {**cwcl_cfg, "loss": "cl"}, f"image-text-cl{'-quick' if quick else ''}")}
    out: dict[str, Any] = {"runs": {k: Path(v["run_dir"]).name for k, v in runs.items()},
                           "trained_on": "tuxpaint split train (images and their captions)"}
    sets = {"tuxpaint": ("test", 1000, "Tux Paint stamps split test, by top-level category"),
            "fashion-mnist": ("test", 20 if quick else 100, "Fashion-MNIST official test set")}
    for set_name, (split, per_class, data) in sets.items():
        spec = analysis.get_set(ensure_dataset(set_name))
        records = analysis.sample(set_name, ["image"], per_class, split=split, max_per_class=None)
        classes = sorted({spec.class_of(r) for r in records})
        labels = [classes.index(spec.class_of(r)) for r in records]
        feats = torch.as_tensor(_pooled("efficientnet-lite0", records, "image"))
        row: dict[str, Any] = {"data": f"{data} ({len(records)} images, {len(classes)} classes)",
                               "n": len(records), "classes": len(classes)}
        for loss, run in runs.items():
            aligned = load_aligned(run["run_dir"])
            with torch.no_grad():
                emb = aligned.model.embed("image", feats)
            encode = text_encoder_fn(aligned.model, aligned.config)
            accs = {}
            for name, ks in (("simple", (1, 5, 10)), ("general", (48,))):
                table = template_robustness(emb, labels, classes, load_templates(name), encode, ks=ks)
                accs.update({f"{name} k={k}": round(float(v["top1"]), 4) for k, v in table.items()})
            row[loss] = accs
        row["drop k=10 -> k=1"] = {loss: round(row[loss]["simple k=10"] - row[loss]["simple k=1"], 4)
                                   for loss in runs}
        out[set_name] = row
        log(f"zero-shot {set_name}: " + "; ".join(f"{loss} {row[loss]}" for loss in runs))
    return out


def section_lock_location(quick: bool) -> dict[str, Any]:
    """`trainers.experiments.lock_table`: none / speech / text / both locked, speech-text, FSDD zero-shot."""
    if quick:
        return {"skipped": QUICK_SKIP}
    try:
        from trainers.experiments import lock_table
    except ImportError as exc:
        return {"blocked": f"trainers.experiments is not available ({exc})"}
    why = _default_model_ready()
    if why:
        return {"blocked": why}
    # A fine-tuned Whisper or MiniLM runs forward and backward in every step on the CPU: a small,
    # equal budget for the four settings (recorded in the result).
    return {**lock_table(max_train=LOCK_BUDGET["max_train"], epochs=LOCK_BUDGET["epochs"]),
            "data": "FSDD spoken digits by 4 people (split test); trained on a seeded subset of the default model's "
                    "synthetic speech set (trainers.experiments.lock_table)"}


LOCK_BUDGET = {"max_train": 1000, "epochs": 3}


def section_image_ceiling(quick: bool) -> dict[str, Any]:
    """`trainers.experiments.image_ceiling`: how far a mix of the image head and the class prior can go."""
    if quick:
        return {"skipped": QUICK_SKIP.replace("synthetic speech set", "image set")}
    try:
        from trainers.experiments import image_ceiling
    except ImportError as exc:
        return {"blocked": f"trainers.experiments is not available ({exc})"}
    why = _default_model_ready()
    return {"blocked": why} if why else image_ceiling(seeds=(0, 1, 2, 3, 4))


def _probe(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, Any]:
    from xmodal_core.metrics import modality_gap, retrieval_probe

    res = retrieval_probe(a, b, trials=100, n_anchors=900, n_queries=100, k=90, p=8.0, seed=seed)
    out = {"direct_top1": None if res.direct_mean is None else round(res.direct_mean, 4),
           "direct_std": None if res.direct_std is None else round(res.direct_std, 4),
           "asif_top1": round(res.asif_mean, 4), "asif_std": round(res.asif_std, 4),
           "chance": round(res.chance, 4), "trials": res.trials, "queries": res.n_queries,
           "anchors": res.n_anchors, "k": res.k, "p": res.p,
           "modality_gap": round(modality_gap(a, b), 4) if a.shape[1] == b.shape[1] else None,
           "dims": [int(a.shape[1]), int(b.shape[1])]}
    if out["direct_top1"] is not None:
        out["asif_minus_direct"] = round(out["asif_top1"] - out["direct_top1"], 4)
    return out


def _tsne(blocks: dict[str, np.ndarray]) -> dict[str, Any]:
    from xmodal_core.projection import project

    names = list(blocks)
    proj = project(np.concatenate([blocks[n] for n in names]), "tsne", seed=0, cache=False)
    coords = np.round(proj.coords, 3)
    out, start = {}, 0
    for n in names:
        out[n] = coords[start:start + len(blocks[n])].tolist()
        start += len(blocks[n])
    return {"points": out, "seconds": round(proj.seconds, 2), "params": proj.params}


def section_maestro(quick: bool) -> dict[str, Any]:
    """Raw towers vs the aligned space: modality gap, direct-cosine vs ASIF probes, t-SNE."""
    from xmodal_core.data.manifest import load_manifest

    shared = shared_space_runs(quick)
    speech_run, image_run = shared["speech"], shared["image"]
    tts = spoken_tuxpaint(quick)
    human = human_speech_text_pairs()
    synthetic = [r for s in ("test", "val") for r in load_manifest(tts, split=s) if r.audio and r.text]
    tux = ensure_dataset("tuxpaint")
    images = [r for s in ("test", "val") for r in load_manifest(tux, split=s) if r.image and r.text]
    sets = {
        "speech_text_human": ("speech", human, "tuxpaint / ktuberling / librivox split test: speech by people "
                                               f"({len(human)} pairs)"),
        "speech_text_synthetic_heldout": ("speech", synthetic, f"{tts} splits test + val: synthetic voices held "
                                                               f"out of training ({len(synthetic)} pairs)"),
        "image_text": ("image", images, f"tuxpaint splits test + val: stamp images and their captions "
                                        f"({len(images)} pairs)"),
    }
    out: dict[str, Any] = {"runs": {"speech": Path(speech_run["run_dir"]).name,
                                    "image": Path(image_run["run_dir"]).name, "source": speech_run["source"]},
                           "protocol": "metrics.retrieval_probe: 100 trials, paper sizes 900 anchors / 100 "
                                       "queries / k=90 / p=8, scaled down to the data (k/anchors kept at 0.1)",
                           "sets": {}}
    for name, (modality, records, data) in sets.items():
        log(f"maestro: {name} ({len(records)} pairs)")
        run = speech_run if modality == "speech" else image_run
        encoder = run["config"]["encoders"][modality]  # the tower the aligned head sits on
        raw = _pooled(encoder, records, modality)
        text = _pooled("minilm", records, "text")
        aligned = _aligned_embed(run, modality, raw)
        row = {"data": data, "modality": modality,
               "raw": {"towers": f"{encoder} pooled vs minilm", **_probe(raw, text)},
               "aligned": {"towers": f"{run['tag']} {modality} head -> locked minilm", **_probe(aligned, text)}}
        if modality == "speech":
            row["tsne"] = {"before": _tsne({"speech": raw, "text": text}),
                           "after": _tsne({"speech": aligned, "text": text})}
        out["sets"][name] = row
        log(f"  raw: direct {row['raw']['direct_top1']} asif {row['raw']['asif_top1']} gap "
            f"{row['raw']['modality_gap']}; aligned: direct {row['aligned']['direct_top1']} asif "
            f"{row['aligned']['asif_top1']} gap {row['aligned']['modality_gap']}")
    s = out["sets"]
    out["checks"] = {
        "asif_beats_direct_on_raw_speech_text": s["speech_text_human"]["raw"]["asif_top1"]
        > (s["speech_text_human"]["raw"]["direct_top1"] or 0),
        "alignment_makes_direct_competitive_speech_text":
            (s["speech_text_human"]["aligned"]["direct_top1"] or 0)
            >= 0.9 * s["speech_text_human"]["aligned"]["asif_top1"],
        "alignment_shrinks_modality_gap": (s["speech_text_human"]["aligned"]["modality_gap"] or 0)
        < (s["speech_text_human"]["raw"]["modality_gap"] or 0),
    }
    return out


def section_teacher_student(quick: bool) -> dict[str, Any]:
    """L2 teacher-student vs CWCL, speech -> text (S->T) and text -> speech (T->S) R@k."""
    from trainers.align import evaluate_run

    tts = spoken_tuxpaint(quick)
    kind, cwcl_cfg = standard_config("speech-text-cwcl", quick, tts)
    l2_cfg = {**cwcl_cfg, "loss": "l2"}
    runs = {"l2": ensure_run(kind, l2_cfg, f"speech-text-l2{'-quick' if quick else ''}"),
            "cwcl": ensure_standard_run("speech-text-cwcl", quick)}
    evals = {"tuxpaint split test (speech by people)": ("tuxpaint", "test"),
             f"{tts} split test (synthetic held-out voices)": (tts, "test")}
    out: dict[str, Any] = {"runs": {k: Path(v["run_dir"]).name for k, v in runs.items()}, "results": {}}
    for label, (dataset, split) in evals.items():
        for loss, run in runs.items():
            m = evaluate_run(run["run_dir"], dataset, split)
            row = {"S->T": {f"R@{k}": round(m[f"speech2text_r@{k}"], 4) for k in (1, 5, 10)},
                   "T->S": {f"R@{k}": round(m[f"text2speech_r@{k}"], 4) for k in (1, 5, 10)}}
            row["T->S_minus_S->T_R@1"] = round(row["T->S"]["R@1"] - row["S->T"]["R@1"], 4)
            out["results"].setdefault(label, {})[loss] = row
            log(f"teacher-student {loss} on {label}: S->T R@1 {row['S->T']['R@1']}, T->S R@1 {row['T->S']['R@1']}")
    human = out["results"]["tuxpaint split test (speech by people)"]["l2"]
    out["finding"] = ("T->S higher than S->T (as the paper)" if human["T->S"]["R@1"] > human["S->T"]["R@1"]
                      else "S->T at least as high as T->S (unlike the paper)")
    return out


VGS_LAMBDAS = ((1.0, 0.0), (0.1, 1.0), (1.0, 1.0))
VGS_TABLE_BUDGET = {"max_train": 640, "epochs": 2}  # each of the three runs: ~40 optimiser steps


def query_sets(quick: bool) -> dict[str, tuple[str, list]]:
    """name -> (description, [(speech record, image record)]): Tux Paint descriptions spoken by
    people (split test), and the same captions spoken by synthetic voices held out of training
    (spoken Tux Paint, split test: in-domain for models trained on synthetic speech)."""
    from bench.search_latency import human_queries
    from xmodal_core.data.manifest import load_manifest

    human = human_queries(20 if quick else None)
    tts = spoken_tuxpaint(quick)
    image_of = {r.group: r for r in load_manifest(ensure_dataset("tuxpaint")) if r.image}
    synthetic = [(r, image_of[r.group]) for r in load_manifest(tts, split="test") if r.audio and r.group in image_of]
    synthetic = synthetic[:20 if quick else 80]
    return {"human": (f"tuxpaint split test, spoken descriptions by people ({len(human)})", human),
            "synthetic_heldout": (f"{tts} split test, synthetic voices held out of training ({len(synthetic)})",
                                  synthetic)}


def _gallery_and_truth(quick: bool, sets: dict[str, tuple[str, list]]):
    from bench.search_latency import gallery_records
    from xmodal_core.audio import load_audio

    targets = [img for _, pairs in sets.values() for _, img in pairs]
    records, counts = gallery_records(200 if quick else 1033, targets)
    groups: dict[str, set[str]] = {}
    for r in records:
        groups.setdefault(r.group, set()).add(r.id)
    data = {name: ([load_audio(s.audio) for s, _ in pairs], [groups.get(s.group, set()) for s, _ in pairs])
            for name, (_, pairs) in sets.items()}
    return records, counts, data


def section_vgs(quick: bool) -> dict[str, Any]:
    """FaST-VGS coarse / fine / CTF accuracy and time for three loss weightings."""
    from bench.search_latency import Pipelines, latency_stats, recall_of, run_queries

    tts = spoken_tuxpaint(quick)
    kind, standard = standard_config("vgs", quick, tts)
    base = standard
    if not quick:  # three runs of the full recipe are hours on a CPU: a shorter, equal budget for each
        base = {**base, **VGS_TABLE_BUDGET}
    sets = query_sets(quick)
    records, counts, data = _gallery_and_truth(quick, sets)
    n_fine = 20 if quick else 30
    out: dict[str, Any] = {"queries": {name: desc for name, (desc, _) in sets.items()},
                           "fine_queries": n_fine,
                           "gallery": f"{len(records)} real images ({counts})",
                           "trained_on": f"{tts} split train ({base.get('max_train') or 'all'} pairs, "
                                         f"{base['epochs']} epoch(s), fine loss over {base['fine_batch']}^2 pairs)",
                           "rows": []}
    for lc, lf in VGS_LAMBDAS:
        cfg = {**base, "lambda_coarse": lc, "lambda_fine": lf}
        if lf == 0:
            cfg["best_metric"] = "s2i_coarse_r@1"  # the fine scorer is not trained: pick by coarse
        tag = "vgs" if cfg == standard else f"vgs-table-{lc:g}-{lf:g}"  # the search benchmark's run
        run = ensure_run(kind, cfg, f"{tag}{'-quick' if quick else ''}")
        pipes = Pipelines(records, run)
        row: dict[str, Any] = {"lambda_c": lc, "lambda_f": lf, "run": Path(run["run_dir"]).name,
                               "best_metric": cfg.get("best_metric", "s2i_ctf_r@1"),
                               "train_seconds": run["train_seconds"], "val": run["best_val"]}
        for set_name, (audios, truth) in data.items():
            ranked, times = run_queries(pipes, audios, n_fine)
            cells = {}
            for mode, name in (("vgs-coarse", "coarse"), ("vgs-fine", "fine"), ("vgs-ctf", "coarse-to-fine")):
                cells[name] = {**recall_of(ranked[mode], truth[:len(ranked[mode])]),
                               "ms_per_query_p50": latency_stats(times[mode])["p50_ms"], "n": len(ranked[mode])}
            cells["coarse-to-fine_on_fine_queries"] = recall_of(ranked["vgs-ctf"][:n_fine], truth[:n_fine])
            if set_name == "human":
                row.update(cells)  # the headline numbers: real speech
            else:
                row[set_name] = cells
        out["rows"].append(row)
        log(f"vgs ({lc}, {lf}): " + ", ".join(f"{n} R@10 {row[n]['R@10']} {row[n]['ms_per_query_p50']} ms"
                                             for n in ("coarse", "fine", "coarse-to-fine"))
            + " | synthetic: " + ", ".join(f"{n} R@10 {row['synthetic_heldout'][n]['R@10']}"
                                           for n in ("coarse", "fine", "coarse-to-fine")))
    return out


def section_domain_gap(quick: bool) -> dict[str, Any]:
    """Every search mode on speech by people vs held-out synthetic voices, same gallery: do the
    models trained on synthetic speech carry over to real speech?"""
    from bench.search_latency import Pipelines, recall_of, run_queries

    runs = {"vgs": ensure_standard_run("vgs", quick), **shared_space_runs(quick)}
    sets = query_sets(quick)
    records, counts, data = _gallery_and_truth(quick, sets)
    pipes = Pipelines(records, runs["vgs"], runs["speech"], runs["image"])
    out: dict[str, Any] = {"queries": {name: desc for name, (desc, _) in sets.items()},
                           "gallery": f"{len(records)} real images ({counts})",
                           "chance_R@10": round(min(1.0, 10 / len(records)), 4),
                           "runs": {k: Path(v["run_dir"]).name for k, v in runs.items()}, "modes": {}}
    for set_name, (audios, truth) in data.items():
        ranked, _ = run_queries(pipes, audios, 0)  # fine (every image) is left out: see the vgs section
        for mode, ids in ranked.items():
            if ids:
                out["modes"].setdefault(mode, {})[set_name] = recall_of(ids, truth)
    for mode, row in out["modes"].items():
        log(f"domain gap {mode}: " + ", ".join(f"{k} R@10 {v['R@10']}" for k, v in row.items()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 training pairs, 1-2 epochs, 20 queries")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fns: dict[str, Callable[[bool], dict]] = {
        "cwcl_vs_cl": section_cwcl_vs_cl, "lock_location": section_lock_location,
        "image_ceiling": section_image_ceiling,
        "maestro": section_maestro, "teacher_student": section_teacher_student, "vgs": section_vgs,
        "domain_gap": section_domain_gap}
    name = "findings_quick" if args.quick else "findings"
    previous = {}
    if args.only:  # keep the other sections of an earlier run
        import json

        from bench._common import RESULTS_DIR

        path = RESULTS_DIR / f"{name}.json"
        if path.is_file():
            earlier = json.loads(path.read_text(encoding="utf-8"))
            previous = earlier.get("sections", {})
            for kept in previous.values():  # the earlier file's date and machine were theirs
                if isinstance(kept, dict):
                    kept.setdefault("measured_at", earlier.get("date"))
                    kept.setdefault("machine", earlier.get("machine", {}))
    sections, failed = dict(previous), []
    for section in args.only or SECTIONS:
        log(f"== {section}")
        t0 = time.perf_counter()
        try:
            sections[section] = {**fns[section](args.quick), "seconds": round(time.perf_counter() - t0, 1),
                                 "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                                 "machine": machine_info()}  # sections kept by --only keep theirs
        except Exception as exc:  # noqa: BLE001 - one broken finding must not lose the others
            traceback.print_exc()
            sections[section] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(section)
    payload = {"quick": args.quick, "sections": sections, "torch_threads": torch.get_num_threads(),
               "note": "quick mode trains on 200 pairs for 1-2 epochs: its numbers check the pipeline, not the "
                       "papers" if args.quick else "full training splits"}
    path = write_result(name, payload)
    log(f"wrote {path}" + (f"; failed sections: {failed}" if failed else ""))
    blocked = [s for s, v in sections.items() if isinstance(v, dict) and "blocked" in v]
    if blocked:
        log(f"blocked sections (waiting on other modules): {blocked}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
