"""`xmodal adapt`: adapt the speech head to a gallery's names, so speech searches it without ASR.

    xmodal adapt --gallery ktuberling [--voices 20] [--epochs 20] [--full] [--json]
    xmodal adapt --gallery default --status
"""
from __future__ import annotations

import sys

from xmodal_core.cli.common import print_json


def cmd_adapt(args) -> int:
    from xmodal_core.adapt import AdaptConfig, adapt, load_state
    from xmodal_core.progress import console_progress
    from xmodal_core.validate import check_name

    name = check_name(args.gallery, "gallery name")
    if args.status:
        state = load_state(name)
        if args.json:
            print_json(None if state is None else {"gallery": state.gallery, "run_id": state.run_id,
                                                   "vocabulary": state.size, "threshold": state.threshold,
                                                   "metrics": state.metrics})
        elif state is None:
            print(f"{name} is not adapted: `xmodal adapt --gallery {name}`")
        else:
            print(f"{name}: adapted by run {state.run_id} to {state.size} names; held-out voices top-1 "
                  f"{state.metrics.get('heldout_top1', float('nan')):.3f}; auto threshold {state.threshold:.3f}")
        return 0
    cfg = AdaptConfig(voices=args.voices, epochs=args.epochs, loss=args.loss)
    report = adapt(name, config=cfg, full=args.full, progress=console_progress(quiet=args.json))
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format())
    sys.stdout.flush()
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("adapt", help="adapt the speech head to a gallery's names (direct speech search)")
    p.add_argument("--gallery", required=True, help="gallery name: default, ktuberling or an indexed folder's name")
    p.add_argument("--voices", type=int, default=20, help="synthetic voices per name (default 20)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs of a full adaptation (default 20)")
    p.add_argument("--loss", choices=("ce", "cwcl", "l2"), default="ce",
                   help="ce: a vocabulary head (default); cwcl or l2: an MLP head regressed onto MiniLM")
    p.add_argument("--full", action="store_true", help="retrain on every clip even when only a few names are new")
    p.add_argument("--status", action="store_true", help="show what the gallery is adapted to and stop")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_adapt)
