"""Trained models used at inference, their configs and loaders, and the one registry of run kinds.

- `aligned`: `AlignConfig`, `AlignModel`, `load_aligned` -> `AlignedModel` (heads into a shared space);
- `vgs`: `VGSConfig`, `FastVGS`, `load_vgs` -> `VGSRetriever` (coarse-to-fine speech -> image);
- `towers`: fine-tunable copies of the pretrained encoders (for runs that train a tower);
- `config`: config dataclasses <-> JSON, `--set` overrides, config files;
- `kinds`: run kind -> config class, loader, train function (as an import string).

Submodules are imported on use (`from xmodal_core.models.aligned import load_aligned`), so
importing this package costs nothing.
"""
