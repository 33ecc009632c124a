"""`xmodal data build|list|speak` and `xmodal features extract`: thin wrappers over xmodal_core.data.

Handlers raise `XmodalError` subclasses on bad input; `xmodal_core.cli.main` prints them and exits 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from xmodal_core.cli.common import callback_bar as _bar, print_json as _print_json


def _fractions(text: str | None):
    if text is None:
        return None
    from xmodal_core.errors import InputError

    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"--fractions wants three numbers like 0.8,0.1,0.1, got {text!r}") from None
    return tuple(parts)


def cmd_build(args) -> int:
    from xmodal_core.data.builders import BUILDERS, build_dataset
    from xmodal_core.errors import InputError

    names = list(BUILDERS) if args.name == "all" else [args.name]
    options = {}
    if args.per_class is not None:
        options["per_class"] = args.per_class
    if args.which is not None:
        options["which"] = args.which
    if args.source is not None:
        options["source"] = Path(args.source)
    if args.train_on_human_speech:
        options["human_speech_split"] = None
    if args.fractions is not None:
        options["fractions"] = _fractions(args.fractions)
    if len(names) > 1 and options:
        raise InputError("options such as --per-class/--which/--source apply to one set: build them one by one")
    summaries = []
    for name in names:
        with _bar(f"building {name}", args.json) as progress:
            summaries.append(build_dataset(name, limit=args.limit, progress=progress, **options))
        if not args.json:
            print(summaries[-1].format())
    if args.json:
        _print_json([s.to_dict() for s in summaries])
    return 0


def cmd_list(args) -> int:
    from xmodal_core.data.manifest import MODALITIES, list_datasets

    infos = list_datasets()
    if args.json:
        _print_json([vars(i) for i in infos])
        return 0
    if not infos:
        print("no data sets built yet: try `xmodal data build tuxpaint`")
        return 0
    print(f"{'set':<18} {'split':<6} {'records':>8} {'image':>7} {'speech':>7} {'text':>7}  licence")
    for info in infos:
        first = True
        for split, row in info.counts.items():
            name = info.name if first else ""
            lic = "; ".join(info.licenses) if first else ""
            print(f"{name:<18} {split:<6} {row.get('records', 0):>8} " +
                  " ".join(f"{row.get(m, 0):>7}" for m in MODALITIES) + f"  {lic}")
            first = False
        for note in info.notes:
            print(f"{'':<18} note: {note if len(note) <= 150 or args.verbose else note[:147] + '...'}")
    return 0


def cmd_speak(args) -> int:
    from xmodal_core.data.speak import speak_dataset
    from xmodal_core.data.tts import default_voices

    voices = args.voices
    if voices is None and args.engines:
        voices = default_voices(args.engines)
    with _bar(f"speaking {args.name}", args.json) as progress:
        summary = speak_dataset(args.name, voices=voices, per_text=args.per_text, eval_per_text=args.eval_per_text,
                                seed=args.seed, limit=args.limit, out_name=args.out, check_wer=args.check_wer,
                                fractions=_fractions(args.fractions) or (0.8, 0.1, 0.1), progress=progress)
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(summary.format())
    return 0


def cmd_voices(args) -> int:
    from xmodal_core.data.speak import assign_voice_splits
    from xmodal_core.data.tts import default_voices, list_voices

    voices = list_voices(args.engine) if args.all else default_voices([args.engine] if args.engine else None)
    splits = assign_voice_splits(voices)
    if args.json:
        _print_json([{"voice": v.id, "split": splits[v]} for v in voices])
    else:
        for v in voices:
            print(f"{v.id:<40} {splits[v]}")
    return 0


def cmd_extract(args) -> int:
    from xmodal_core.data.features import extract_features

    with _bar(f"{args.encoder} on {args.dataset}", args.json) as progress:
        report = extract_features(args.dataset, args.encoder, tokens=args.tokens, split=args.split, limit=args.limit,
                                  batch_size=args.batch_size, device=args.device, progress=progress)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format())
    return 0


def add_commands(subparsers) -> dict[str, argparse._SubParsersAction]:
    """Register `data build|list|speak|voices` and `features extract`.

    Returns {"data": ..., "features": ...}: the sub-subparsers, so other modules can add
    commands beside these (e.g. `data export-labels`).
    """
    from xmodal_core.data.builders import BUILDERS

    data = subparsers.add_parser("data", help="build, list and speak data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True

    p = data_sub.add_parser("build", help="build a data set's manifest from its installed source")
    p.add_argument("name", choices=[*BUILDERS, "all"])
    p.add_argument("--limit", type=int, help="only the first N items (a small slice)")
    p.add_argument("--per-class", type=int, help="at most N items per class (fashion-mnist, fsdd)")
    p.add_argument("--which", choices=["test", "train", "all"], help="fashion-mnist: which official part (default test)")
    p.add_argument("--source", help="read from this folder instead of the installed location (e.g. fsdd recordings)")
    p.add_argument("--fractions", help="train,val,test fractions for hashed splits (default 0.8,0.1,0.1)")
    p.add_argument("--train-on-human-speech", action="store_true",
                   help="split human speech by speaker instead of keeping it all for evaluation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_build)

    p = data_sub.add_parser("list", help="built data sets with counts per split and modality")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true", help="print notes in full")
    p.set_defaults(func=cmd_list)

    p = data_sub.add_parser("speak", help="speak a set's texts with synthetic voices into the set NAME-tts")
    p.add_argument("name", help="a built set, e.g. tuxpaint or emoji")
    p.add_argument("--voices", nargs="+", help="voices as ENGINE:NAME (default: every installed engine's default voices)")
    p.add_argument("--engines", nargs="+", choices=["espeak-ng", "flite", "festival"], help="only these engines")
    p.add_argument("--per-text", type=int, default=2, help="voices per training text (default 2)")
    p.add_argument("--eval-per-text", type=int, default=1, help="voices per val/test text (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="only the first N texts")
    p.add_argument("--out", help="name of the new set (default NAME-tts)")
    p.add_argument("--fractions", help="train,val,test fractions for splitting voices (default 0.8,0.1,0.1)")
    p.add_argument("--check-wer", type=int, default=6,
                   help="utterances per engine transcribed with Whisper for the round-trip WER (0 = skip)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_speak)

    p = data_sub.add_parser("voices", help="TTS voices installed here and the split each speaks in")
    p.add_argument("--engine", choices=["espeak-ng", "flite", "festival"])
    p.add_argument("--all", action="store_true", help="every espeak-ng variant, not only the default ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_voices)

    feats = subparsers.add_parser("features", help="the frozen-feature cache")
    feats_sub = feats.add_subparsers(dest="features_command", metavar="ACTION")
    feats_sub.required = True
    p = feats_sub.add_parser("extract", help="compute and cache an encoder's features for a data set")
    p.add_argument("--dataset", required=True, help="a built set name or a manifest path")
    p.add_argument("--encoder", required=True, help="minilm, whisper-tiny.en, efficientnet-lite0, ...")
    p.add_argument("--tokens", action="store_true", help="also cache token-level features")
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="cpu, cuda (default: cuda when present)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_extract)
    return {"data": data_sub, "features": feats_sub}
