"""The default model's image-text training set: Tux Paint training stamps, emoji, glyphs, mirrored copies."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from trainers.default_model.recipe import NAME, NO_MIRROR, DefaultModelConfig


def build_image_set(cfg: DefaultModelConfig) -> dict[str, Any]:
    """The image-text training set `cfg.image.dataset`: Tux Paint training stamps (a dev tenth of
    their groups as "val"), every emoji, the typeset glyphs, and mirrored copies of the training
    images of `cfg.image_data.mirror` (same caption and group). Source media are not copied; the
    mirrored ones are written once under the set's folder."""
    from dataclasses import replace

    from xmodal_core.data import load_manifest
    from xmodal_core.data.manifest import (
        BuildSummary,
        count_records,
        dataset_dir,
        hash_unit,
        write_manifest,
        write_summary,
    )

    records = []
    for r in load_manifest("tuxpaint", split="train"):
        if r.image and r.text:
            dev = hash_unit(r.group, f"{NAME}-dev-{cfg.seed}") < cfg.image_data.dev_fraction
            records.append(replace(r, split="val" if dev else "train"))
    if cfg.image_data.emoji:
        records += [replace(r, split="train") for r in load_manifest("emoji") if r.image and r.text]
    if cfg.image_data.glyphs:
        records += [replace(r, split="train") for r in load_manifest("glyphs") if r.image and r.text]
    out_dir = dataset_dir(cfg.image.dataset)
    mirrored = [r for r in records if r.split == "train" and r.id.split(":")[0] in cfg.image_data.mirror
                and not r.id.startswith(NO_MIRROR)]
    records += [replace(r, id=f"{r.id}#mirror", image=str(mirror_image(Path(r.image), out_dir / "media-mirror")))
                for r in mirrored]
    summary = BuildSummary(name=cfg.image.dataset, records=len(records), counts=count_records(records))
    summary.notes.append("Tux Paint held-out fifth (its val and test splits) is not in this set; "
                         "val here is a dev tenth of the Tux Paint training groups")
    if mirrored:
        summary.notes.append(f"{len(mirrored)} training images also appear mirrored left-right ({', '.join(cfg.image_data.mirror)})")
    summary.path = str(write_manifest(out_dir / "manifest.jsonl", records))
    write_summary(out_dir, summary)
    return summary.to_dict()


def mirror_image(src: Path, out_dir: Path) -> Path:
    """A left-right mirrored copy of `src` under `out_dir`, named by the source's bytes (so an
    unchanged source is not mirrored twice, and a changed one gets a new file)."""
    from PIL import Image, ImageOps

    from xmodal_core.data.render import save_png

    data = src.read_bytes()
    out = out_dir / f"{hashlib.sha256(data).hexdigest()[:24]}.png"
    if not out.is_file():
        with Image.open(src) as img:
            img.load()
            save_png(ImageOps.mirror(img.convert("RGBA")), out)
    return out
