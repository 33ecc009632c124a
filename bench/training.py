"""Training throughput: an epoch on cached frozen features vs recomputing them, CWCL vs CL step time, samples/s.

    python -m bench.training            # Tux Paint + spoken Tux Paint, full train splits -> results/training.json
    python -m bench.training --quick    # 96 pairs per set, < 2 min once features are cached -> training_quick.json

Both settings are the default alignment recipe (frozen towers, text locked without a head, an MLP
head on the other tower, batch 64): images <-> captions on Tux Paint (train split) and synthetic
spoken captions <-> captions on spoken Tux Paint (train split, training voices only).

- cached epoch: read the pooled features from the feature cache + one epoch of
  `trainers.align.train` (best of 3);
- recompute epoch: run the frozen towers on the raw items (batched, as fast as they go) + the
  same epoch (one round: it is slow). Target: cached at least 20x faster.
- step time: one optimiser step (forward, backward, AdamW) of the CL and the CWCL model on the
  same batch, interleaved round-robin. Target: CWCL within 1.2x of CL.

This module is also the benchmarks' shared set-up: `ensure_dataset`, `spoken_tuxpaint` and
`ensure_run` (train a run once per config and data, then reuse it) serve search_latency,
app_latency and findings, so every benchmark trains its models the same way.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._common import timeit_interleaved, write_result  # noqa: E402

TTS_FULL = "tuxpaint-tts"
TTS_QUICK = "tuxpaint-tts-quick"
QUICK_TTS_TEXTS = 300


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ============================================================================ shared set-up

def bench_home() -> Path:
    """Where benchmark runs live: `$XMODAL_HOME/bench` (outside the app's run store)."""
    from xmodal_core import paths

    path = paths.home() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_dataset(name: str) -> str:
    """Build a data set from its installed source when its manifest is missing; returns the name."""
    from xmodal_core.data.builders import build_dataset
    from xmodal_core.data.manifest import manifest_path

    try:
        if manifest_path(name).is_file():
            return name
    except Exception:  # noqa: BLE001 - an unknown or missing set is built below
        pass
    log(f"building data set {name} (once)")
    build_dataset(name)
    return name


def spoken_tuxpaint(quick: bool) -> str:
    """The synthetic spoken Tux Paint set for training: the full `tuxpaint-tts` when it is built
    (or when not quick: then it is spoken now, a few minutes), else a slice of the first
    `QUICK_TTS_TEXTS` captions spoken into `tuxpaint-tts-quick`."""
    from xmodal_core.data.manifest import manifest_path
    from xmodal_core.data.speak import speak_dataset

    ensure_dataset("tuxpaint")
    if manifest_path(TTS_FULL).is_file():
        return TTS_FULL
    if not quick:
        log(f"speaking Tux Paint captions into {TTS_FULL} (once, a few minutes)")
        speak_dataset("tuxpaint")
        return TTS_FULL
    if not manifest_path(TTS_QUICK).is_file():
        log(f"speaking the first {QUICK_TTS_TEXTS} Tux Paint captions into {TTS_QUICK} (once)")
        speak_dataset("tuxpaint", limit=QUICK_TTS_TEXTS, out_name=TTS_QUICK, check_wer=0)
    return TTS_QUICK


def manifest_signature(name: str) -> dict[str, Any]:
    """What identifies a built set's content for cache keys: its manifest's size and mtime."""
    from xmodal_core.data.manifest import manifest_path

    p = manifest_path(name)
    st = p.stat()
    return {"name": name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _config(kind: str, config: Mapping[str, Any]):
    if kind == "align":
        from xmodal_core.models.aligned import AlignConfig

        return AlignConfig.from_dict(dict(config))
    if kind == "vgs":
        from xmodal_core.models.vgs import VGSConfig

        return VGSConfig.from_dict(dict(config))
    raise ValueError(f"unknown run kind {kind!r}")


def ensure_run(kind: str, config: Mapping[str, Any], tag: str) -> dict[str, Any]:
    """Train `config` (an AlignConfig or VGSConfig dict) once, reuse it afterwards.

    The run folder is `bench_home()/runs/TAG-HASH`, HASH over the full config and the training
    set's manifest signature, so a changed config or a rebuilt data set trains again. Returns
    what `bench_run.json` records: run_dir, config, data and train seconds, pairs, best
    validation metrics, and `reused` (True when nothing was trained now).
    """
    from trainers.common import OfflineContext

    cfg = _config(kind, config)
    sig = {"kind": kind, "config": cfg.to_dict(), "data": manifest_signature(cfg.dataset)}
    key = hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = bench_home() / "runs" / f"{tag}-{key}"
    done = run_dir / "bench_run.json"
    if done.is_file():
        info = json.loads(done.read_text(encoding="utf-8"))
        return {**info, "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run that died half-way: start clean
    log(f"training {kind} run {tag} ({run_dir.name})")
    t0 = time.perf_counter()
    if kind == "align":
        from trainers.align import load_split, train

        train_split = load_split(cfg, cfg.train_split, limit=cfg.max_train)
        val_split = load_split(cfg, cfg.val_split, limit=cfg.max_val)
    else:
        from trainers.vgs import load_vgs_split, train

        train_split = load_vgs_split(cfg, cfg.train_split, limit=cfg.max_train)
        val_split = load_vgs_split(cfg, cfg.val_split, limit=cfg.max_val)
    t1 = time.perf_counter()
    result = train(cfg, train_split, val_split, OfflineContext(run_dir))
    t2 = time.perf_counter()
    (run_dir / "last.pt").unlink(missing_ok=True)  # the resume checkpoint is not needed once done
    info = {"run_dir": str(run_dir), "kind": kind, "tag": tag, "config": cfg.to_dict(),
            "dataset": sig["data"], "train_pairs": len(train_split), "val_pairs": len(val_split),
            "data_seconds": round(t1 - t0, 2), "train_seconds": round(t2 - t1, 2), "steps": result.steps,
            "best_epoch": result.best_epoch, "best_val": result.best, "last_loss": result.last_loss}
    done.write_text(json.dumps(info, indent=2), encoding="utf-8")
    log(f"trained {tag}: {result.steps} steps in {t2 - t1:.1f} s (+{t1 - t0:.1f} s data)")
    return {**info, "reused": False}


def standard_config(name: str, quick: bool, tts: str) -> tuple[str, dict[str, Any]]:
    """(kind, config) of the runs several benchmarks share, so each is trained once.

    - "vgs": FaST-VGS on spoken Tux Paint, the paper's best (lambda_c, lambda_f) = (0.1, 1);
    - "speech-text-cwcl": speech head into the locked MiniLM space (CWCL) on spoken Tux Paint;
    - "image-text-cwcl": image head into the same space (CWCL) on Tux Paint captions.
    Quick: 128-200 training pairs and 1-2 epochs (a barely trained model: the numbers are for the
    schema, not for conclusions); full: the whole train split (FaST-VGS: 4 epochs, 8 x 8 fine
    pairs a step, 64 validation captions, to fit a CPU budget of minutes).
    """
    limit = {"max_train": 200, "max_val": 64} if quick else {}
    if name == "vgs":  # the fine loss costs fine_batch^2 transformer passes a step: the CPU budget
        return "vgs", {"dataset": tts, "lambda_coarse": 0.1, "lambda_fine": 1.0, "batch_size": 32,
                       "fine_batch": 8, "epochs": 1 if quick else 4,
                       "warmup_steps": 0 if quick else 20, "device": "cpu",
                       **({"max_train": 128, "max_val": 32} if quick else {"max_val": 64})}
    if name == "speech-text-cwcl":
        return "align", {"dataset": tts, "towers": ["speech", "text"], "locked": "both", "no_head": ["text"],
                         "loss": "cwcl", "batch_size": 64, "epochs": 2 if quick else 20,
                         "warmup_steps": 0 if quick else 20, "device": "cpu", **limit}
    if name == "image-text-cwcl":
        return "align", {"dataset": "tuxpaint", "towers": ["image", "text"], "locked": "both", "no_head": ["text"],
                         "loss": "cwcl", "batch_size": 64, "epochs": 2 if quick else 20,
                         "warmup_steps": 0 if quick else 20, "device": "cpu", **limit}
    raise ValueError(f"unknown standard run {name!r}")


def ensure_standard_run(name: str, quick: bool) -> dict[str, Any]:
    kind, config = standard_config(name, quick, spoken_tuxpaint(quick))
    return ensure_run(kind, config, f"{name}{'-quick' if quick else ''}")


def shared_space_runs(quick: bool) -> dict[str, dict[str, Any]]:
    """The speech and image runs of the shared MiniLM space that Search's coarse mode uses.

    Full: the app's default model (`trainers.default_model.ensure_default_model()`, trained first
    when missing: ~15 min on 2 cores), i.e. what a person searches with. Quick, or in a checkout
    without that module: the standard CWCL runs above. Returns modality -> {run_dir, config,
    tag, train_pairs, trained_on}."""
    unavailable = ""
    if not quick:
        try:
            from trainers.default_model import ensure_default_model
        except ImportError as exc:
            ensure_default_model, unavailable = None, f"trainers.default_model not importable ({exc})"
        model = None
        if ensure_default_model is not None:
            log("the default model (xmodal-default): training it first if missing")
            try:
                model = ensure_default_model()
            except Exception as exc:  # noqa: BLE001 - its failure is recorded with every number below
                unavailable = f"ensure_default_model() failed: {type(exc).__name__}: {exc}"
                log(f"{unavailable}; using the bench's own CWCL runs")
        if model is not None:
            out = {}
            for modality, run_dir in (("speech", model.speech_dir), ("image", model.image_dir)):
                saved = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
                out[modality] = {"run_dir": run_dir, "config": saved["config"], "tag": f"xmodal-default-{modality}",
                                 "train_pairs": None, "source": "xmodal-default (trainers.default_model)"}
            return out
    out = {"speech": ensure_standard_run("speech-text-cwcl", quick),
           "image": ensure_standard_run("image-text-cwcl", quick)}
    for info in out.values():
        info["source"] = "bench standard CWCL run (bench.training.standard_config)" + (
            f"; the default model was unavailable: {unavailable}" if unavailable else "")
    return out


# ============================================================================ the benchmark

def _records(dataset: str, towers: tuple[str, str], n: int | None) -> list:
    from xmodal_core.data.manifest import load_manifest

    records = [r for r in load_manifest(dataset, split="train") if all(r.item(m) is not None for m in towers)]
    return records[:n] if n else records


def _align_cfg(dataset: str, towers: tuple[str, str], n: int, batch_size: int, loss: str = "cwcl"):
    from xmodal_core.models.aligned import AlignConfig

    return AlignConfig(dataset=dataset, towers=towers, locked="both", no_head=("text",), head="mlp", loss=loss,
                       batch_size=min(batch_size, n), epochs=1, max_train=n, device="cpu")


def _one_epoch(cfg, split) -> float:
    """Seconds of one epoch of `trainers.align.train` (no validation) in a fresh run folder."""
    from trainers.align import train
    from trainers.common import OfflineContext

    with tempfile.TemporaryDirectory(prefix="xmodal-bench-train-") as tmp:
        t0 = time.perf_counter()
        train(cfg, split, None, OfflineContext(tmp))
        return time.perf_counter() - t0


def _step_times(dataset: str, towers: tuple[str, str], n: int, batch_size: int, split,
                step_repeat: int) -> dict[str, Any]:
    """Step time of the same batch through the CL and the CWCL model, interleaved."""
    from xmodal_core.models.aligned import build_model
    from trainers.common import make_optimizer

    in_dims = {m: split.in_dim(m) for m in towers}
    bs = min(batch_size, n)
    idx = list(range(bs))
    steps = {}
    for loss in ("cl", "cwcl"):
        c = _align_cfg(dataset, towers, n, batch_size, loss)
        torch.manual_seed(0)
        model = build_model(c, in_dims).train()
        opt = make_optimizer(model, lambda _name: c.lr, c.weight_decay, c.betas)
        anchor_in, other_in = split.view(c.anchor, idx), split.view(c.other, idx)

        def step(model=model, opt=opt, anchor_in=anchor_in, other_in=other_in):
            loss_value, _ = model(anchor_in, other_in)
            opt.zero_grad(set_to_none=True)
            loss_value.backward()
            opt.step()

        steps[loss.upper()] = step
    return timeit_interleaved(steps, repeat=step_repeat, warmup=5)


def bench_setting(name: str, dataset: str, towers: tuple[str, str], n: int | None, batch_size: int,
                  repeat: int, step_repeat: int) -> dict[str, Any]:
    """Cached vs recomputed epoch and CWCL vs CL step time for one pair of towers."""
    from trainers.align import PairSplit, load_split
    from xmodal_core.data.features import FeatureCache
    from xmodal_core.registry import get_encoder

    records = _records(dataset, towers, n)
    n = len(records)
    cfg = _align_cfg(dataset, towers, n, batch_size)
    log(f"{name}: {n} pairs of {dataset} (train split); filling the feature cache if needed")
    t0 = time.perf_counter()
    for m in towers:
        FeatureCache(cfg.encoders[m]).get(records, m)
    fill_s = time.perf_counter() - t0

    cached_data, cached_train = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        split = load_split(cfg, "train", limit=n)
        cached_data.append(time.perf_counter() - t0)
        cached_train.append(_one_epoch(cfg, split))
    cached = [d + t for d, t in zip(cached_data, cached_train)]
    best = min(range(repeat), key=lambda i: cached[i])

    log(f"{name}: recomputing the frozen features for one epoch")
    t0 = time.perf_counter()
    features = {m: torch.as_tensor(get_encoder(cfg.encoders[m]).encode([r.item(m) for r in records]))
                for m in towers}
    recompute_data = time.perf_counter() - t0
    fresh = PairSplit(ids=[r.id for r in records], groups=[r.group or r.id for r in records],
                      labels=[r.label for r in records], keys={m: [str(r.item(m)) for r in records] for m in towers},
                      features=features)
    recompute_train = _one_epoch(cfg, fresh)
    recompute = recompute_data + recompute_train
    max_diff = float(max((features[m] - split.features[m]).abs().max() for m in towers))

    bs = min(batch_size, n)
    step_stats = _step_times(dataset, towers, n, batch_size, split, step_repeat)
    ratio = step_stats["CWCL"]["p50_ms"] / step_stats["CL"]["p50_ms"]
    out = {
        "dataset": dataset, "split": "train", "towers": list(towers), "pairs": n, "batch_size": cfg.batch_size,
        "encoders": {m: cfg.encoders[m] for m in towers},
        "first_fill_seconds": round(fill_s, 3),
        "cached_epoch": {"seconds": round(cached[best], 4), "data_seconds": round(cached_data[best], 4),
                         "train_seconds": round(cached_train[best], 4), "rounds": repeat,
                         "samples_per_s": round(n / cached[best], 1),
                         "train_samples_per_s": round(n / cached_train[best], 1)},
        "recompute_epoch": {"seconds": round(recompute, 3), "data_seconds": round(recompute_data, 3),
                            "train_seconds": round(recompute_train, 4), "rounds": 1,
                            "samples_per_s": round(n / recompute, 2)},
        "cached_speedup": round(recompute / cached[best], 1),
        "max_abs_diff_cached_vs_recomputed_features": max_diff,
        "step_ms": step_stats,
        "cwcl_over_cl_step": round(ratio, 3),
        "steps_per_s": {k: round(1000.0 / v["p50_ms"], 1) for k, v in step_stats.items()},
        "step_samples_per_s": {k: round(bs * 1000.0 / v["p50_ms"], 1) for k, v in step_stats.items()},
    }
    log(f"{name}: cached epoch {cached[best]:.3f} s vs recompute {recompute:.1f} s = {out['cached_speedup']}x; "
        f"step CL {step_stats['CL']['p50_ms']:.2f} ms, CWCL {step_stats['CWCL']['p50_ms']:.2f} ms (x{ratio:.2f})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96 pairs per setting, fewer rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 96 if args.quick else None
    repeat, step_repeat = (2, 20) if args.quick else (3, 60)
    load_before = os.getloadavg()
    tts = spoken_tuxpaint(args.quick)
    settings = {
        "image_text": bench_setting("image_text", ensure_dataset("tuxpaint"), ("image", "text"), n, args.batch_size,
                                    repeat, step_repeat),
        "speech_text": bench_setting("speech_text", tts, ("speech", "text"), n, args.batch_size, repeat,
                                     step_repeat),
    }
    payload = {
        "quick": args.quick,
        "what": "one training epoch on cached frozen features vs recomputing them; CWCL vs CL optimiser step",
        "data": {k: f"{v['dataset']} split {v['split']} ({v['pairs']} pairs; spoken captions are synthetic voices "
                    f"of the training split)" for k, v in settings.items()},
        "settings": settings,
        "torch_threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "targets": {"cached_speedup_min": 20.0, "cwcl_over_cl_step_max": 1.2},
    }
    path = write_result("training_quick" if args.quick else "training", payload)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
