"""The default model's two comparison tables (CWCL paper, in small), measured on FSDD zero-shot.

- `cwcl_vs_cl`: the default speech run's recipe trained with CWCL and with CL, on the same data
  for the same number of steps, once per seed (5 by default); zero-shot top-1 with the first
  k = 1, 5, 10 simple templates, the 48 general ones, and the bare "{}" (CWCL Table 3: CWCL
  should lose less when k shrinks), as mean and spread over the seeds.
- `lock_table`: which tower keeps its pretrained weights (none / speech / text / both) for
  speech-text, on a seeded subset of the synthetic speech set with a small budget, since a
  fine-tuned tower runs in every step on the CPU (CWCL Table 6).
- `image_ceiling`: how far the default image recipe's two parts (the trained head and the
  ImageNet class prior) can go on Tux Paint caption -> image: each alone, mixed at the recipe's
  weight, at the best fixed weight picked on the held-out set itself, and with a per-query
  oracle weight (an upper bound for any mix of the two), per seed.

Each setting is a run in the store (named `exp-...`, never `xmodal-default...`), so the runs page
shows them. `python -m trainers.experiments cwcl-vs-cl|locks|image-ceiling [--json]`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from trainers.default_model import (Progress, embed_records, fsdd_records, fsdd_zeroshot, load_config, train_align_run)
from xmodal_core.errors import DatasetError, InputError

TEMPLATE_SETTINGS = (("simple", (1, 5, 10)), ("general", (48,)))
LOCKS = ("none", "speech", "text", "both")
SEEDS = (0, 1, 2, 3, 4)


def template_table(aligned, records: Sequence | None = None) -> dict[str, float]:
    """FSDD zero-shot top-1 of one run for each template setting: `simple k=1/5/10`,
    `general k=48`, and `bare {}`."""
    from xmodal_core.models.aligned import text_encoder_fn
    from xmodal_core.data.builders import DIGIT_WORDS
    from xmodal_core.evaluate import template_curve

    records = fsdd_records(records)
    emb = embed_records(aligned, records, "speech")
    labels = [r.label for r in records]
    encode = text_encoder_fn(aligned.model, aligned.config)
    out: dict[str, float] = {}
    for name, ks in TEMPLATE_SETTINGS:
        curve = template_curve(emb, labels, DIGIT_WORDS, name, encode, ks=ks)
        out.update({f"{name} k={k}": top1 for k, top1 in zip(curve.ks, curve.top1)})
    out["bare {}"] = float(fsdd_zeroshot(aligned, ("{}",), records)["top1"])
    return out


def cwcl_vs_cl(epochs: int | None = None, seeds: Sequence[int] = SEEDS, progress: Progress | None = None,
               store=None) -> dict[str, Any]:
    """Train the default speech recipe with CWCL and with CL (same data, steps and seeds) and compare
    their FSDD zero-shot accuracy per template setting. Each loss is trained once per seed: the
    table holds the mean over seeds (`std` the spread), `per_seed` each run, and the drop from
    k = 10 to k = 1 is given per seed and as mean +- std, so a difference can be told from seed
    noise. Needs the default speech set (built by `ensure_default_model`)."""
    from xmodal_core.models.aligned import load_aligned

    if not seeds:
        raise InputError("cwcl_vs_cl needs at least one seed")
    base = load_config().speech
    if epochs is not None:
        base = replace(base, epochs=int(epochs))
    out: dict[str, Any] = {"seeds": [int(s) for s in seeds]}
    drops: dict[str, list[float]] = {}
    for loss in ("cwcl", "cl"):
        per_seed = []
        for seed in seeds:
            start = time.perf_counter()
            run = train_align_run(f"exp-speech-{loss}-seed{seed}", replace(base, loss=loss, seed=int(seed)),
                                  progress, store)
            per_seed.append({"seed": int(seed), "run": run.id, "train_seconds": round(time.perf_counter() - start, 1),
                             **template_table(load_aligned(run.id))})
        keys = [k for k in per_seed[0] if k not in ("seed", "run", "train_seconds")]
        out[loss] = {**{k: float(np.mean([r[k] for r in per_seed])) for k in keys},
                     "std": {k: float(np.std([r[k] for r in per_seed])) for k in keys},
                     "train_seconds": round(float(np.mean([r["train_seconds"] for r in per_seed])), 1),
                     "runs": [r["run"] for r in per_seed], "per_seed": per_seed}
        drops[loss] = [r["simple k=10"] - r["simple k=1"] for r in per_seed]
    out["drop k=10 -> k=1"] = {loss: float(np.mean(d)) for loss, d in drops.items()}
    out["drop k=10 -> k=1 std"] = {loss: float(np.std(d)) for loss, d in drops.items()}
    out["drop k=10 -> k=1 per seed"] = drops
    out["cwcl drops less in"] = f"{sum(a < b for a, b in zip(drops['cwcl'], drops['cl']))} of {len(seeds)} seeds"
    return out


def subset_set(n: int, seed: int = 0) -> str:
    """A seeded random `n` training records of the default speech set (plus its val split),
    written as the set `xmodal-default-speech-sub{n}`; returns its name."""
    from xmodal_core.data.manifest import dataset_dir, load_manifest, write_manifest

    source = load_config().speech.dataset
    records = load_manifest(source)
    train = [r for r in records if r.split == "train"]
    if n >= len(train):
        return source
    rng = np.random.default_rng(seed)
    keep = sorted(rng.choice(len(train), size=n, replace=False).tolist())
    name = f"{source}-sub{n}"
    write_manifest(dataset_dir(name) / "manifest.jsonl", [train[i] for i in keep] + [r for r in records if r.split == "val"])
    return name


def lock_config(base, locked: str):
    """The default speech recipe with `locked` (none / speech / text / both). An unlocked text
    tower cannot be head-less (it would move the shared space), so it gets a head too."""
    if locked not in LOCKS:
        raise InputError(f"locked must be one of {', '.join(LOCKS)}; got {locked!r}")
    text_locked = locked in ("text", "both")
    return replace(base, locked=locked, no_head=("text",) if text_locked else (), embed_dim=None if text_locked else 384)


def lock_table(max_train: int = 1500, epochs: int = 4, batch_size: int = 64, max_val: int = 64,
               locks: Sequence[str] = LOCKS, progress: Progress | None = None, store=None) -> dict[str, Any]:
    """FSDD zero-shot for each lock setting (CWCL, same subset, steps and seed for all). Fine-tuned
    towers train at `tower_lr` (the recipe's 1e-5), heads at the recipe's lr."""
    from xmodal_core.models.aligned import load_aligned

    base = load_config().speech
    base = replace(base, dataset=subset_set(max_train), epochs=int(epochs), batch_size=int(batch_size),
                   max_val=int(max_val), warmup_steps=min(base.warmup_steps, 10))
    out: dict[str, Any] = {"train_pairs": max_train, "epochs": epochs, "batch_size": batch_size}
    for locked in locks:
        start = time.perf_counter()
        run = train_align_run(f"exp-speech-lock-{locked}", lock_config(base, locked), progress, store)
        out[locked] = {"run": run.id, "train_seconds": round(time.perf_counter() - start, 1),
                       **template_table(load_aligned(run.id))}
    return out


def image_ceiling(seeds: Sequence[int] = SEEDS, epochs: int | None = None, progress: Progress | None = None,
                  store=None) -> dict[str, Any]:
    """Train the default image recipe once per seed and measure Tux Paint caption -> image
    R@1/5/10 on the dev tenth (of the training stamps) and the held-out fifth for: the head
    alone, the class prior alone, the recipe's mix, the best fixed mixing weight (picked on that
    same split, so optimistic), and the per-query oracle weight (`metrics.mixture_recall`). Mean
    and spread over seeds, and each seed. Needs the default image set (`ensure_default_model`)."""
    from trainers.default_model import cached_features, heldout_tuxpaint, tuxpaint_gallery
    from xmodal_core.models.aligned import load_aligned
    from xmodal_core.data import load_manifest
    from xmodal_core.metrics import mixture_recall

    if not seeds:
        raise InputError("image_ceiling needs at least one seed")
    base = load_config().image
    if epochs is not None:
        base = replace(base, epochs=int(epochs))
    recipe_w = float(base.class_prior.get("image", 0.0))
    splits = {"dev": [r for r in load_manifest(base.dataset, split="val") if r.id.startswith("tuxpaint:")],
              "heldout": heldout_tuxpaint()}
    splits = {name: records for name, records in splits.items() if any(r.image for r in records)}
    if "heldout" not in splits:
        raise DatasetError("no held-out Tux Paint images to measure on: build the set (`xmodal data build tuxpaint`)")
    # per split, once: (caption records, positives (queries x images), cached image features)
    galleries = {}
    for split, records in splits.items():
        images, captions, positives = tuxpaint_gallery(records)
        galleries[split] = (captions, positives, cached_features(base.encoders["image"], images, "image"))
    weights = sorted({*np.round(np.linspace(0, 1, 21), 2).tolist(), recipe_w})
    rows = ("head alone", "prior alone", "recipe mix", "best fixed weight", "per-query oracle")
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        run = train_align_run(f"exp-image-seed{seed}", replace(base, seed=int(seed)), progress, store)
        aligned = load_aligned(run.id)
        entry: dict[str, Any] = {"seed": int(seed), "run": run.id}
        for split, (captions, positives, features) in galleries.items():
            head, prior = aligned.model.head_and_prior("image", features)
            mix = mixture_recall(embed_records(aligned, captions, "text"), head, prior, positives, weights)
            at = dict(zip(mix.weights, mix.recall))
            entry[split] = {"head alone": at[0.0], "prior alone": at[1.0], "recipe mix": at[recipe_w],
                            "best fixed weight": at[mix.best_weight], "per-query oracle": mix.oracle,
                            "best weight": mix.best_weight, "queries": len(captions), "gallery": len(features)}
        per_seed.append(entry)
    out: dict[str, Any] = {"seeds": [int(s) for s in seeds], "recipe_weight": recipe_w, "rows": list(rows),
                           "per_seed": per_seed}
    for split in splits:
        out[split] = {row: {k: float(np.mean([e[split][row][k] for e in per_seed])) for k in per_seed[0][split][row]}
                      for row in rows}
        out[split]["std"] = {row: {k: float(np.std([e[split][row][k] for e in per_seed]))
                                   for k in per_seed[0][split][row]} for row in rows}
        out[split]["best weights"] = [e[split]["best weight"] for e in per_seed]
        out[split]["queries"], out[split]["gallery"] = per_seed[0][split]["queries"], per_seed[0][split]["gallery"]
    sizes = {s: f"{out[s]['queries']} captions -> {out[s]['gallery']} images" for s in splits}
    out["data"] = ("Tux Paint caption -> image: dev = the dev tenth of the training stamps "
                   f"({sizes.get('dev', 'none here')}), heldout = the held-out fifth (manifest val + test, "
                   f"{sizes['heldout']}); image runs trained on the default image set "
                   "(trainers.experiments.image_ceiling)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from trainers.default_model import console_progress, ensure_default_model

    parser = argparse.ArgumentParser(prog="python -m trainers.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("table", choices=["cwcl-vs-cl", "locks", "image-ceiling"])
    parser.add_argument("--epochs", type=int, help="training epochs per run")
    parser.add_argument("--max-train", type=int, default=1500, help="locks: training pairs (seeded subset)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS),
                        help="cwcl-vs-cl: seeds per loss; image-ceiling: image runs (seeds 0, 1, ...)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    progress = None if args.quiet else console_progress()
    ensure_default_model(progress)  # builds the synthetic speech set the experiments train on
    if args.table in ("cwcl-vs-cl", "image-ceiling") and args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.table == "cwcl-vs-cl":
        result = cwcl_vs_cl(args.epochs, tuple(range(args.seeds)), progress)
    elif args.table == "image-ceiling":
        result = image_ceiling(tuple(range(args.seeds)), args.epochs, progress)
    else:
        result = lock_table(args.max_train, args.epochs or 4, progress=progress)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
