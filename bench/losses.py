"""Step time (forward + backward) of CWCL against CL, measured interleaved in one run.

    python bench/losses.py            # N = 1024, d = 512 -> bench/results/losses.json
    python bench/losses.py --quick    # N = 256, d = 128, < 1 min -> bench/results/losses_quick.json

Two settings: both towers trained (gradient to both sides), and the LiT / CWCL setting where
the locked side is frozen (no gradient to it, in both losses). Target: CWCL within 1.2x of CL.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench._common import timeit_interleaved, write_result  # noqa: E402
from xmodal_core.losses import clip_loss, cwcl_loss, masked_margin_softmax_loss  # noqa: E402


def _step_fns(n: int, d: int, locked_grad: bool, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    locked = F.normalize(torch.randn(n, d, generator=gen), dim=-1).to(device).requires_grad_(locked_grad)
    trained = F.normalize(torch.randn(n, d, generator=gen), dim=-1).to(device).requires_grad_(True)
    scale = torch.tensor(1 / 0.07, device=device, requires_grad=True)
    item_ids = torch.arange(n, device=device) // 2  # two captions per item
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(loss_fn):
        def step():
            for t in (locked, trained, scale):
                t.grad = None
            loss_fn().backward()
            sync()

        return step

    return {
        "CL": run(lambda: clip_loss(locked, trained, scale)),
        "CWCL": run(lambda: cwcl_loss(locked, trained, scale)),
        "CWCL_symmetric": run(lambda: cwcl_loss(locked, trained, scale, symmetric=True)),
        "masked_margin": run(lambda: masked_margin_softmax_loss(locked @ trained.T, item_ids)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--n", type=int, default=None, help="batch size (default 1024; 256 with --quick)")
    parser.add_argument("--d", type=int, default=None, help="embedding width (default 512; 128 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="timed steps per loss (default 60; 20 quick)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default=None, help="result file name (default losses / losses_quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and BLAS (default: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # scipy's BLAS too (CWCL's weights use syrk on the CPU)
    n = args.n or (256 if args.quick else 1024)
    d = args.d or (128 if args.quick else 512)
    repeat = args.repeat or (20 if args.quick else 60)
    device = torch.device(args.device)

    settings = {}
    for setting, locked_grad in (("both_trained", True), ("locked_frozen", False)):
        stats = timeit_interleaved(_step_fns(n, d, locked_grad, device), repeat=repeat, warmup=5)
        cl, cl_min = stats["CL"]["p50_ms"], stats["CL"]["min_ms"]
        settings[setting] = {
            "locked_requires_grad": locked_grad,
            "step_ms": stats,
            "ratio_p50_vs_CL": {name: s["p50_ms"] / cl for name, s in stats.items()},
            "ratio_min_vs_CL": {name: s["min_ms"] / cl_min for name, s in stats.items()},
        }
        print(f"{setting}: " + ", ".join(
            f"{name} p50 {s['p50_ms']:.2f} ms (x{s['p50_ms'] / cl:.2f}) min {s['min_ms']:.2f} ms "
            f"(x{s['min_ms'] / cl_min:.2f})" for name, s in stats.items()
        ), flush=True)
    ratio = settings["both_trained"]["ratio_p50_vs_CL"]["CWCL"]
    payload = {
        "params": {"n": n, "d": d, "repeat": repeat, "device": str(device), "quick": args.quick,
                   "threads": torch.get_num_threads(),
                   "measure": "forward + backward per step; steps of all losses interleaved; "
                              "ratios of p50 and of min (min is the least disturbed by other load)"},
        "settings": settings,
        "target": {"CWCL_over_CL_max": 1.2, "CWCL_over_CL_both_trained": ratio,
                   "CWCL_over_CL_locked_frozen": settings["locked_frozen"]["ratio_p50_vs_CL"]["CWCL"]},
    }
    path = write_result(args.name or ("losses_quick" if args.quick else "losses"), payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
