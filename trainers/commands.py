"""`xmodal train`, `xmodal runs`, `xmodal eval`, `xmodal cancel`, `xmodal worker`, registered with the
`xmodal` command by name (`xmodal_core.cli.COMMAND_MODULES`).

`train` runs in the foreground with a progress bar (or, with `--queue`, leaves the run for
the app's worker); every run, its metrics and evaluations land in the run store.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xmodal_core.errors import InputError

from xmodal_core.models.kinds import KINDS
from xmodal_core.models.kinds import config_class as _config_class


def build_config(path: str | Path | None, overrides: list[str], kind: str | None = None) -> tuple[str, str, dict]:
    """(kind, name, validated config dict) from a JSON file plus `key=value` overrides.

    The file holds the config's settings; optional top-level "kind" (default "align") and
    "name" are taken out first."""
    from xmodal_core.models.config import load_config_file, parse_overrides
    from xmodal_core.validate import check_settings

    data = load_config_file(path) if path else {}
    file_kind, name = data.pop("kind", None), data.pop("name", None)
    kind = kind or file_kind or "align"
    cls = _config_class(kind)
    cfg = cls.from_dict(check_settings({**data, **parse_overrides(overrides)}))
    default_name = f"{kind}-{'-'.join(getattr(cfg, 'towers', ()))}-{getattr(cfg, 'loss', '')}".rstrip("-")
    return kind, str(name or (Path(path).stem if path else default_name)), cfg.to_dict()


class _Progress:
    """A tqdm bar on stderr fed by RunContext.log."""

    def __init__(self, quiet: bool):
        from tqdm import tqdm

        self.quiet = quiet
        self.bar = tqdm(total=None, unit="step", file=sys.stderr, disable=quiet, dynamic_ncols=True)

    def __call__(self, step: int, total: int | None, metrics: dict[str, float]) -> None:
        if total and self.bar.total != total:
            self.bar.total = total
        if "loss" in metrics:
            self.bar.update(max(0, step - self.bar.n))
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        elif not self.quiet and any(k.startswith("val/") for k in metrics):
            shown = {k[4:]: f"{v:.3f}" for k, v in metrics.items() if k.endswith(("r_mean", "r@1", "top1"))}
            self.bar.write(f"step {step} validation: " + ", ".join(f"{k} {v}" for k, v in shown.items()))

    def close(self) -> None:
        self.bar.close()


def _finish_message(run) -> tuple[str, int]:
    from xmodal_core.runner import last_error_line

    if run.status == "completed":
        return f"run {run.id} completed", 0
    if run.status == "cancelled":
        return f"run {run.id} cancelled (resume with `xmodal train --resume {run.id}`)", 130
    return f"run {run.id} failed: {last_error_line(run)} (full traceback: `xmodal runs --show {run.id}`)", 1


def cmd_train(args) -> int:
    from trainers.run import resolve
    from xmodal_core.runner import execute
    from xmodal_core.store import Store

    if args.resume is not None and (args.config or args.set):
        raise InputError("--resume continues a run with its stored config; drop --config/--set")
    if args.resume is None and not args.config:
        raise InputError("give --config FILE (see trainers/configs/), or --resume RUN")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return _train_distributed(args)

    store = Store()
    if args.resume is not None:
        run = store.requeue_run(args.resume)
    else:
        kind, name, config = build_config(args.config, args.set, args.kind)
        run = store.get_run(store.create_run(args.name or name, kind, config))
    print(f"run {run.id}", flush=True)
    if args.queue:
        print(f"queued; the app's worker (or `xmodal worker`) will run it", file=sys.stderr)
        return 0
    progress = _Progress(args.quiet)
    try:
        finished = execute(run.id, lambda r, ctx: resolve(r.kind)(r, ctx), store, on_log=progress)
    finally:
        progress.close()
    message, code = _finish_message(finished)
    evaluations = store.evaluations(run.id)
    if evaluations:
        best = ", ".join(f"{e.metric} {e.value:.3f}" for e in evaluations if "r@1" in e.metric or "top1" in e.metric
                         or e.metric == "r_mean")
        print(f"best on {evaluations[0].dataset}/{evaluations[0].split}: {best}", file=sys.stderr)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def _train_distributed(args) -> int:
    """Under torchrun: rank 0 owns the run in the store; every rank trains."""
    import torch.distributed as dist

    from trainers.common import init_distributed, leave_distributed

    if args.queue:
        raise InputError("--queue does not go with torchrun: queue the run from a plain `xmodal train`")
    kind, name, config = (None, None, None) if args.resume is not None else build_config(args.config, args.set, args.kind)
    info = init_distributed(config.get("device", "auto") if config else "auto")
    try:
        code = _train_this_rank(args, info, kind, name, config)
    except BaseException:
        if info.launched and dist.is_initialized():
            dist.destroy_process_group()
        raise
    if info.launched:
        leave_distributed(code)  # does not return: see its docstring for why
    return code


def _train_this_rank(args, info, kind, name, config) -> int:
    from trainers.common import OfflineContext, broadcast_object
    from trainers.run import resolve
    from xmodal_core.runner import execute, run_dir
    from xmodal_core.store import Store

    if info.is_main:
        store = Store()
        if args.resume is not None:
            run_id = store.requeue_run(args.resume).id
        else:
            run_id = store.create_run(args.name or name, kind, config)
        print(f"run {run_id}", flush=True)
    run_id = broadcast_object(run_id if info.is_main else None, info)
    if info.is_main:
        progress = _Progress(args.quiet)
        try:
            finished = execute(run_id, lambda r, ctx: resolve(r.kind)(r, ctx), store, on_log=progress)
        finally:
            progress.close()
        message, code = _finish_message(finished)
        print(message, file=sys.stderr if code else sys.stdout)
        return code
    run = Store().get_run(run_id)
    # Only rank 0 reports; the others train alongside (their context writes nothing).
    resolve(run.kind)(run, OfflineContext(run_dir(run_id), writable=False))
    return 0


def _run_dict(run, evaluations) -> dict[str, Any]:
    out = asdict(run)
    out["evaluations"] = [asdict(e) for e in evaluations]
    return out


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def cmd_runs(args) -> int:
    from xmodal_core.store import Store

    store = Store()
    if args.show is not None:
        run = store.get_run(args.show)
        if args.json:
            json.dump(_run_dict(run, store.evaluations(run.id)), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        print(f"run {run.id} {run.name!r} kind={run.kind} status={run.status} step={run.step}/{run.total_steps or '?'} "
              f"device={run.device or '-'} created={_when(run.created_at)} finished={_when(run.finished_at)}")
        print("config: " + json.dumps(run.config, sort_keys=True))
        for e in store.evaluations(run.id):
            print(f"  {e.dataset}/{e.split} {e.metric} = {e.value:.4f}")
        if run.error:
            print("error:\n" + run.error)
        return 0
    runs = store.list_runs(status=args.status, kind=args.kind, limit=args.limit)
    if args.json:
        json.dump([_run_dict(r, store.evaluations(r.id)) for r in runs], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not runs:
        print("no runs yet: `xmodal train --config trainers/configs/<file>.json`")
        return 0
    print(f"{'id':>4}  {'name':<28} {'kind':<6} {'status':<10} {'step':>11}  {'created':<16}  best")
    for r in runs:
        evals = {e.metric: e.value for e in store.evaluations(r.id) if e.split == r.config.get("val_split", "val")}
        metric = r.config.get("best_metric", "r_mean")
        best = f"{metric} {evals[metric]:.3f}" if metric in evals else ""
        steps = f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step)
        print(f"{r.id:>4}  {r.name[:28]:<28} {r.kind:<6} {r.status:<10} {steps:>11}  {_when(r.created_at):<16}  {best}")
    return 0


def cmd_eval(args) -> int:
    from xmodal_core.store import Store

    store = Store()
    run = store.get_run(args.run)
    if run.kind == "align":
        from trainers.align import evaluate_run

        metrics = evaluate_run(run.id, args.dataset, args.split, limit=args.limit)
    elif run.kind == "vgs":
        from trainers.vgs import evaluate_run as evaluate_vgs

        metrics = evaluate_vgs(run.id, args.dataset, args.split, limit=args.limit)
    else:
        raise InputError(f"run {run.id} is of kind {run.kind!r}; `xmodal eval` knows align and vgs runs")
    store.add_evaluation(run.id, args.dataset, args.split, metrics)
    if args.json:
        json.dump({"run": run.id, "dataset": args.dataset, "split": args.split, "metrics": metrics}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    else:
        print(f"run {run.id} on {args.dataset}/{args.split}:")
        for name, value in metrics.items():
            print(f"  {name:<24} {value:.4f}")
    return 0


def cmd_cancel(args) -> int:
    from xmodal_core.store import Store

    run = Store().request_cancel(args.run)
    print(f"run {run.id} {'cancelled' if run.status == 'cancelled' else 'will stop at its next step'}")
    return 0


def cmd_worker(args) -> int:
    from xmodal_core.runner import Runner

    runner = Runner(poll_interval_s=args.poll)
    while True:
        for run in runner.run_pending():
            print(f"run {run.id} {run.status}", flush=True)
        if args.once:
            return 0
        time.sleep(args.poll)


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an alignment (or FaST-VGS) model; prints the run id")
    p.add_argument("--config", type=Path, help="JSON config (see trainers/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set lr=3e-4 --set 'towers=[\"speech\",\"text\"]'")
    p.add_argument("--kind", choices=sorted(KINDS), help="run kind (default: the file's, else align)")
    p.add_argument("--name", help="run name (default: the config file name)")
    p.add_argument("--resume", type=int, metavar="RUN", help="continue a failed or cancelled run from its checkpoint")
    p.add_argument("--queue", action="store_true", help="only queue the run for the app's worker")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("runs", help="list training runs from the run store")
    p.add_argument("--json", action="store_true")
    p.add_argument("--status", choices=["queued", "running", "completed", "failed", "cancelled"])
    p.add_argument("--kind")
    p.add_argument("--limit", type=int)
    p.add_argument("--show", type=int, metavar="RUN", help="one run in full: config, evaluations, error")
    p.set_defaults(func=cmd_runs)

    p = subparsers.add_parser("eval", help="evaluate a trained run on a data set split; stores the result")
    p.add_argument("run", type=int)
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="first N records only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("cancel", help="cancel a queued run, or stop a running one at its next step")
    p.add_argument("run", type=int)
    p.set_defaults(func=cmd_cancel)

    p = subparsers.add_parser("worker", help="run queued runs one at a time, each in its own process")
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the queue")
    p.set_defaults(func=cmd_worker)
