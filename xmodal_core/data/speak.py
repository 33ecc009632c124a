"""Spoken versions of a set's texts: `speak_dataset("tuxpaint")` writes the set `tuxpaint-tts`.

Every text-only record (a caption with its image, an emoji name) is spoken by a few
synthetic voices; each utterance becomes a record with the same group, split, text,
label, image and licence (synthesised audio adds no terms of its own), plus `audio`
and `speaker` = the voice: a speech-image-text triple.
Voices are split like speakers: a voice (or a recorded person behind several engines'
voices) speaks in one split only. The source set is never modified.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

from xmodal_core.data.builders import class_word_overlap, overlap_notes
from xmodal_core.data.manifest import (
    DEFAULT_FRACTIONS,
    SPLITS,
    BuildSummary,
    Progress,
    Record,
    count_records,
    dataset_dir,
    hash_unit,
    load_manifest,
    write_manifest,
    write_summary,
)
from xmodal_core.data.tts import (
    Voice,
    seeded_rng,
    default_voices,
    engine_wer_dict,
    request_for,
    round_trip_wer,
    synthesize_report,
    voice_family,
    voice_person,
)
from xmodal_core.errors import DatasetError, InputError, XmodalError

VOICE_SALT = "xmodal-voice-split-v1"


def assign_voice_splits(voices: Sequence[Voice], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[Voice, str]:
    """Each voice's split, so that no person speaks in two splits.

    Within each family (espeak-ng formant voices; voices recorded from people) persons are
    ordered by a salted hash and the first ~fractions[2] go to test, the next ~fractions[1]
    to val (at least one each when the family has three or more persons), the rest to train.
    """
    persons: dict[str, dict[str, list[Voice]]] = defaultdict(lambda: defaultdict(list))
    for v in voices:
        persons[voice_family(v)][voice_person(v)].append(v)
    out: dict[Voice, str] = {}
    for family, by_person in persons.items():
        order = sorted(by_person, key=lambda p: hash_unit(p, VOICE_SALT))
        n = len(order)
        n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else 0
        n_val = max(1, round(fractions[1] * n)) if n >= 3 and fractions[1] > 0 else 0
        for i, person in enumerate(order):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for v in by_person[person]:
                out[v] = split
    return out


def _texts_to_speak(name: str, limit: int | None) -> list[Record]:
    """The set's distinct (group, text) records without audio, the first `limit` of them."""
    records = load_manifest(name)
    seen: set[tuple[str, str]] = set()
    sources: list[Record] = []
    for r in records:
        if r.text and r.audio is None and (r.group, r.text) not in seen:
            seen.add((r.group, r.text))
            sources.append(r)
    if not sources:
        raise DatasetError(f"{name} has no text records without audio to speak")
    if limit is not None:
        sources = sources[:limit]
    return sources


def _plan_utterances(sources: list[Record], by_split: dict[str, list[Voice]], per_text: int, eval_per_text: int,
                     seed: int, summary: BuildSummary) -> list[tuple[Record, object]]:
    """(record, TTS request) pairs: seeded voices from each text's own split; texts with none are skipped."""
    plan: list[tuple[Record, object]] = []
    for r in sources:
        candidates = by_split.get(r.split) or []
        if not candidates:
            summary.skip(r.id, f"no voice held out for split {r.split!r}: give more voices")
            continue
        k = min(per_text if r.split == "train" else eval_per_text, len(candidates))
        for v in seeded_rng("speak", seed, r.id).sample(candidates, k):
            plan.append((r, request_for(r.text, v, seed=seed)))
    return plan


def _spoken_records(plan: list[tuple[Record, object]], wavs: list, errors: dict, summary: BuildSummary) -> list[Record]:
    """One record per synthesised utterance; failed syntheses are skipped with their error."""
    spoken = []
    for i, ((r, req), wav) in enumerate(zip(plan, wavs)):
        if wav is None:
            summary.skip(f"{r.id} @ {req.voice.id}", f"synthesis failed: {errors.get(i, 'unknown error')}")
            continue
        spoken.append(Record(id=f"{r.id}@{req.voice.id}", image=r.image, audio=str(wav), text=r.text, label=r.label,
                             group=r.group, speaker=req.voice.id, source=f"tts:{req.voice.engine}", split=r.split,
                             license=r.license))
    return spoken


def _note_round_trip_wer(summary: BuildSummary, requests: list, wavs: list, per_engine: int, seed: int) -> None:
    """Whisper round-trip WER per engine into the summary (a note instead when it cannot be measured)."""
    try:
        wer = round_trip_wer(requests, wavs, per_engine=per_engine, seed=seed)
    except XmodalError as exc:
        summary.notes.append(f"round-trip WER not measured: {exc}")
    else:
        summary.extra["round_trip_wer"] = engine_wer_dict(wer)
        for e in wer.values():
            summary.notes.append(
                f"round trip {e.engine} -> whisper-tiny.en: WER {e.wer:.1%} on {e.utterances} utterances "
                f"(worst voice {e.worst_voice}: {e.worst_voice_wer:.1%})")


def speak_dataset(
    name: str,
    *,
    voices: Sequence[Voice | str] | None = None,
    per_text: int = 2,
    eval_per_text: int = 1,
    seed: int = 0,
    limit: int | None = None,
    out_name: str | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    check_wer: int = 6,
    workers: int = 2,
    progress: Progress | None = None,
) -> BuildSummary:
    """Speak the texts of a built set into a new set (default name `NAME-tts`).

    Args:
        name: a built set (its text records without audio are spoken).
        voices: voices to use (default `default_voices()`); split between train/val/test.
        per_text: voices per training text; `eval_per_text` for val and test texts.
        seed: picks voices and rate/pitch jitter; the same seed gives the same files.
        limit: speak only the first `limit` texts.
        out_name: name of the new set.
        check_wer: utterances per engine to transcribe with Whisper for the round-trip
            WER in the summary (0 = skip).
        progress: callable(done, total) over utterances.

    Returns:
        The new set's `BuildSummary`; `extra["round_trip_wer"]` has WER per engine.
    """
    start = time.perf_counter()
    out_name = out_name or f"{name}-tts"
    if out_name == name:
        raise InputError("the spoken set needs its own name: the source set is never overwritten")
    sources = _texts_to_speak(name, limit)
    pool = [Voice.parse(v) if isinstance(v, str) else v for v in (voices if voices is not None else default_voices())]
    if not pool:
        raise DatasetError("no TTS voices available: install espeak-ng, flite or festival")
    voice_split = assign_voice_splits(sorted(set(pool)), fractions)
    by_split = {s: sorted(v for v, vs in voice_split.items() if vs == s) for s in SPLITS}

    summary = BuildSummary(name=out_name)
    plan = _plan_utterances(sources, by_split, per_text, eval_per_text, seed, summary)
    requests = [req for _, req in plan]
    wavs, errors = synthesize_report(requests, workers=workers, progress=progress)

    spoken = _spoken_records(plan, wavs, errors, summary)
    if not spoken:
        raise DatasetError(f"no utterance could be synthesised for {name}: {summary.skipped_by_reason()}")

    summary.extra["source_set"] = name
    summary.extra["seed"] = seed
    summary.extra["voice_splits"] = {s: [v.id for v in vs] for s, vs in by_split.items()}
    if check_wer > 0:
        _note_round_trip_wer(summary, requests, wavs, check_wer, seed)
    summary.notes += overlap_notes(class_word_overlap(spoken), "spoken training texts")
    summary.records = len(spoken)
    summary.counts = count_records(spoken)
    out_dir = dataset_dir(out_name)
    summary.path = str(write_manifest(out_dir / "manifest.jsonl", spoken))
    summary.seconds = round(time.perf_counter() - start, 2)
    write_summary(out_dir, summary)
    return summary
