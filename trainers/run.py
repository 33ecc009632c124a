"""The worker process for one run: `python -m trainers.run RUN_ID [--db PATH] [--claimed]`.

Looks up the run's kind (a registered name such as "align", or an importable
"package.module:function"), runs it under `xmodal_core.runner.execute`, and exits 0
when the run completed or was cancelled, 1 when it failed. SIGTERM asks the trainer
to stop at its next step, keeping its last checkpoint.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Sequence

from xmodal_core.models.kinds import train_function
from xmodal_core.runner import RunContext, TrainFn, execute, run_dir
from xmodal_core.store import Run, Store


def resolve(kind: str) -> TrainFn:
    """The training function of a run kind (`xmodal_core.models.kinds`)."""
    return train_function(kind)


def _train(run: Run, ctx: RunContext) -> None:
    resolve(run.kind)(run, ctx)  # resolved inside execute, so a bad kind is recorded as a failed run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.run", description=__doc__)
    parser.add_argument("run_id", type=int)
    parser.add_argument("--db", type=Path, default=None, help="run store (default: paths.db_path())")
    parser.add_argument("--runs-dir", type=Path, default=None, help="run folders (default: paths.runs_dir())")
    parser.add_argument("--claimed", action="store_true", help="the run was moved to running by a Runner")
    args = parser.parse_args(argv)

    store = Store(args.db)
    ctx = RunContext(store=store, run_id=args.run_id, run_dir=run_dir(args.run_id, args.runs_dir))
    signal.signal(signal.SIGTERM, lambda signum, frame: ctx.interrupted.set())
    run = execute(args.run_id, _train, store, claimed=args.claimed, context=ctx)
    print(f"run {run.id} {run.status}", flush=True)
    if run.error:
        print(run.error, file=sys.stderr, flush=True)
    return 1 if run.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
