"""What every command module of the `xmodal` CLI shares: JSON output and progress bars."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager


def print_json(obj) -> None:
    """`obj` as indented JSON on stdout (non-ASCII kept as is)."""
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def item_bar(total: int, desc: str, quiet: bool):
    """A tqdm bar over `total` items on stderr (hidden when quiet or for a single item)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=quiet or total < 2, file=sys.stderr)


@contextmanager
def callback_bar(desc: str, quiet: bool = False):
    """A tqdm bar driven by progress(done, total) callbacks."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="item", file=sys.stderr, disable=quiet, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()
