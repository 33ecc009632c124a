"""Training presets and the small helpers the Train page needs around the run store.

A preset is a named, complete run config (kind + settings). The form on the Train page
starts from one and overrides a few fields; `make_config` validates the result through the
trainer's own config class, so a bad combination is refused before it is queued.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmodal_core import paths
from xmodal_core.errors import DatasetError, StoreError
from xmodal_core.models.kinds import KINDS

ONE_MINUTE = "1-minute demo"


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str
    config: dict[str, Any]
    description: str = ""


def _align(**settings) -> dict[str, Any]:
    base = {"dataset": "tuxpaint", "towers": ["image", "text"], "locked": "both", "no_head": ["text"],
            "head": "mlp", "loss": "cwcl", "batch_size": 64, "lr": 1e-3, "epochs": 10}
    base.update(settings)
    return base


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(ONE_MINUTE, "align", _align(epochs=4, max_train=192, max_val=64, batch_size=64, lr=2e-3),
           "images ↔ text on 192 Tux Paint pairs, frozen towers, CWCL heads; about a minute on a laptop CPU "
           "(seconds once the features are cached)"),
    Preset("images ↔ text, CWCL (Tux Paint)", "align", _align(epochs=20, batch_size=128),
           "the default image model: frozen EfficientNet + MLP head into the locked MiniLM space, CWCL"),
    Preset("images ↔ text, CL baseline (Tux Paint)", "align", _align(epochs=20, batch_size=128, loss="cl"),
           "the same with the plain CLIP loss, to compare with CWCL"),
    Preset("images ↔ text, CWCL (emoji)", "align", _align(dataset="emoji", epochs=20, batch_size=128),
           "emoji names as captions"),
    Preset("speech ↔ text, CWCL (Tux Paint TTS)", "align",
           _align(dataset="tuxpaint-tts", towers=["speech", "text"], epochs=20, batch_size=128),
           "synthetic spoken captions → locked MiniLM text space (needs `xmodal data speak tuxpaint`)"),
    Preset("speech ↔ text, CL baseline (Tux Paint TTS)", "align",
           _align(dataset="tuxpaint-tts", towers=["speech", "text"], epochs=20, batch_size=128, loss="cl"),
           "the same with the plain CLIP loss"),
    Preset("speech ↔ text, teacher-student L2 (Tux Paint TTS)", "align",
           _align(dataset="tuxpaint-tts", towers=["speech", "text"], epochs=20, batch_size=128, loss="l2"),
           "frozen MiniLM teacher, speech student, Euclidean distance"),
    Preset("FaST-VGS coarse + fine (Tux Paint TTS)", "vgs",
           {"dataset": "tuxpaint-tts", "epochs": 10, "batch_size": 32},
           "speech ↔ image with a coarse dual encoder and a fine cross-attention scorer"),
)}


def config_class(kind: str):
    """The config dataclass of a run kind (`xmodal_core.models.kinds`)."""
    from xmodal_core.models.kinds import config_class as kind_config_class

    return kind_config_class(kind)


def available_kinds() -> list[str]:
    """Run kinds whose trainer module exists in this checkout (found without importing it)."""
    return [name for name, kind in KINDS.items() if kind.trainer_available()]


def presets() -> dict[str, Preset]:
    """Built-in presets whose trainer is available, plus JSON configs in trainers/configs/."""
    kinds = set(available_kinds())
    out = {name: p for name, p in PRESETS.items() if p.kind in kinds}
    folder = paths.REPO_ROOT / "trainers" / "configs"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        kind = data.pop("kind", "align")
        name = data.pop("name", None) or path.stem
        if kind in kinds and isinstance(data, dict):
            out.setdefault(f"{name} (trainers/configs)", Preset(f"{name} (trainers/configs)", kind, data,
                                                                f"from {path.relative_to(paths.REPO_ROOT)}"))
    return out


def make_config(kind: str, base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """`base` with `overrides` (None values are ignored), validated by the trainer's config class.

    Raises:
        InputError: an impossible combination, with the trainer's explanation.
    """
    from xmodal_core.validate import check_settings

    data = dict(base)
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = config_class(kind).from_dict(check_settings(data))
    return cfg.to_dict()


def check_dataset(name: str, towers: tuple[str, ...] | list[str] = ()) -> int:
    """Records in a built set (or a manifest under `validate.data_roots()`) that have every tower's
    view; raises DatasetError when there are none, InputError for a path outside those folders."""
    from xmodal_core.data.manifest import load_manifest
    from xmodal_core.validate import check_data_source

    records = load_manifest(check_data_source(name))
    usable = [r for r in records if all(r.item(m) is not None for m in towers)]
    if not usable:
        raise DatasetError(f"data set {name!r} has no records with {' and '.join(towers)}; pick another one")
    return len(usable)


def run_rows(store, limit: int = 50) -> list[list[Any]]:
    """Rows for the run table: id, name, kind, status, progress, towers, loss, data, device,
    best validation numbers, age, error (last line)."""
    from xmodal_core.runner import last_error_line

    evaluations: dict[int, dict[str, float]] = {}
    for ev in store.evaluations():
        evaluations.setdefault(ev.run_id, {})[ev.metric] = ev.value
    rows = []
    now = time.time()
    for run in store.list_runs(limit=limit):
        ev = evaluations.get(run.id, {})
        total = run.total_steps or 0
        progress = f"{run.step}/{total}" if total else (str(run.step) if run.step else "")
        rows.append([
            run.id, run.name, run.kind, run.status, progress,
            "-".join(run.config.get("towers", [])) or "", run.config.get("loss", ""), run.config.get("dataset", ""),
            run.device or "", _num(ev.get("r_mean")), _num(ev.get("zeroshot_top1")),
            _age(now - run.created_at), last_error_line(run) if run.status == "failed" else "",
        ])
    return rows


RUN_HEADERS = ["id", "name", "kind", "status", "step", "towers", "loss", "data", "device", "val R-mean",
               "val ZS top-1", "created", "error"]


def _num(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 129600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


@dataclass
class Curves:
    """Metric series of several runs: {run id: {metric: (steps, values)}}."""

    series: dict[int, dict[str, tuple[list[float], list[float]]]] = field(default_factory=dict)


def curves(store, run_ids: list[int], names: tuple[str, ...] = ("loss",), *, x: str = "step") -> Curves:
    """Series of the given metric names (a name ending in "*" is a prefix, e.g. "val/*")."""
    out = Curves()
    for rid in run_ids:
        try:
            rows = store.metrics(int(rid))
        except StoreError:
            continue
        per: dict[str, tuple[list[float], list[float]]] = {}
        for m in rows:
            if not any(m.name == n or (n.endswith("*") and m.name.startswith(n[:-1])) for n in names):
                continue
            xs, ys = per.setdefault(m.name, ([], []))
            xs.append(float(m.step if x == "step" else m.epoch))
            ys.append(float(m.value))
        out.series[int(rid)] = per
    return out


def compare_rows(store, run_ids: list[int]) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows): one row per evaluation metric, one column per run."""
    runs = []
    for rid in run_ids:
        try:
            runs.append(store.get_run(int(rid)))
        except StoreError:
            continue
    values: dict[str, dict[int, float]] = {}
    for run in runs:
        for ev in store.evaluations(run.id):
            values.setdefault(f"{ev.dataset}/{ev.split} {ev.metric}", {})[run.id] = ev.value
    for run in runs:
        for key in ("loss", "locked", "batch_size", "lr", "epochs", "dataset"):
            if key in run.config:
                values.setdefault(f"config {key}", {})[run.id] = run.config[key]
    headers = ["metric"] + [f"run {r.id} · {r.name}" for r in runs]
    rows = [[name] + [_cell(values[name].get(r.id)) for r in runs] for name in sorted(values)]
    return headers, rows


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
    return "" if value is None else value


def run_folder(run_id: int) -> Path:
    return paths.runs_dir() / str(int(run_id))
