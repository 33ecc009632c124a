"""`xmodal models`, `xmodal transcribe`, `xmodal embed`: the frozen towers from a shell."""
from __future__ import annotations

from pathlib import Path

from xmodal_core.cli.common import item_bar, print_json
from xmodal_core.errors import InputError


def cmd_models(args) -> int:
    from xmodal_core.registry import list_models, status_dict

    statuses = list_models(load=not args.no_load)
    if args.json:
        print_json([status_dict(s) for s in statuses])
        return 0
    print(f"{'name':<20} {'modality':<8} {'dim':>5}  {'offline':<8} source / detail")
    for s in statuses:
        ok = "yes" if s.available else ("?" if args.no_load else "NO")
        print(f"{s.name:<20} {s.modality:<8} {s.dim:>5}  {ok:<8} {s.source}")
        if not s.available and not args.no_load:
            print(f"{'':<45} {s.detail}")
    return 0 if args.no_load or all(s.available for s in statuses) else 1


def cmd_transcribe(args) -> int:
    from xmodal_core.audio import load_audio
    from xmodal_core.registry import get_transcriber
    from xmodal_core.validate import MAX_SECONDS_RANGE, check_number

    max_seconds = check_number(args.max_seconds, "--max-seconds", *MAX_SECONDS_RANGE)
    audios = [load_audio(f, max_seconds=max_seconds) for f in args.files]
    transcriber = get_transcriber(args.model)
    results = []
    with item_bar(len(audios), "transcribing", args.json) as bar:
        for audio in audios:
            results.append({"file": audio.source, "duration_s": round(audio.duration, 3),
                            "text": transcriber.transcribe([audio])[0]})
            bar.update(1)
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['file']}\t{r['text']}")
    return 0


def cmd_embed(args) -> int:
    from xmodal_core.registry import get_encoder

    if bool(args.text) == bool(args.files):
        raise InputError("give either --text T [T ...] or one or more files, not both and not neither")
    encoder = get_encoder(args.model)
    if args.text:
        items, labels = list(args.text), list(args.text)
        if encoder.modality != "text":
            raise InputError(f"{args.model} encodes {encoder.modality}, not text: pass files instead of --text")
    else:
        if encoder.modality == "text":
            raise InputError(f"{args.model} encodes text: use --text")
        if encoder.modality == "speech":
            from xmodal_core.audio import load_audio

            items = [load_audio(f) for f in args.files]
        else:
            from xmodal_core.images import load_image

            items = [load_image(f) for f in args.files]
        labels = [str(f) for f in args.files]
    with item_bar(len(items), "embedding", args.json) as bar:
        vectors = encoder.encode(items, progress=lambda done, total: bar.update(done - bar.n))
    if args.json:
        print_json({"model": encoder.name, "dim": encoder.dim,
                     "items": [{"input": label, "embedding": [round(float(x), 6) for x in vec]}
                               for label, vec in zip(labels, vectors)]})
    else:
        for label, vec in zip(labels, vectors):
            head = " ".join(f"{x:+.4f}" for x in vec[:6])
            print(f"{label}\tdim={len(vec)}\t[{head} ...]")
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the registered models and whether they load offline here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-load", action="store_true", help="do not load the weights, only list")
    p.set_defaults(func=cmd_models)

    p = subparsers.add_parser("transcribe", help="speech to text with Whisper (greedy decoding)")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longest accepted clip (default 30)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_transcribe)

    p = subparsers.add_parser("embed", help="embed texts, audio or image files with one tower")
    p.add_argument("--model", required=True, help="minilm, whisper-tiny.en, efficientnet-lite0, open_clip:..., a folder")
    p.add_argument("--text", nargs="+", help="texts to embed")
    p.add_argument("files", nargs="*", type=Path, help="audio or image files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_embed)
