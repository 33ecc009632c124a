"""Spoken vocabulary adaptation against its targets: people's recordings, direct path vs ASR cascade.

    python -m bench.adapt                # the adapted default model + the ktuberling gallery -> bench/results/adapt.json
    python -m bench.adapt --curves       # also accuracy vs voices per name and vs vocabulary size (long)

Query sets (people's recordings, never trained on, never used to choose a setting):
- tuxpaint: the 65 `*_desc.ogg` recordings of Tux Paint stamps -> the stamp's name among all stamp
  names, and -> the stamp's picture among the default gallery's 2,409 images;
- ktuberling: the 72 English word recordings of ktuberling-data -> the object's picture in the
  ktuberling gallery (and its name among the gallery's names);
- fsdd: 2,000 spoken digits by 4 people -> the digit among the ten digit words.
Selection of every setting used held-out synthetic voices only (the runs' `heldout_*` metrics).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import stamp, write_result  # noqa: E402

TARGETS = {"tux_name_top1": 0.75, "tux_name_top10": 0.85, "fsdd_top1": 0.95, "direct_vs_cascade_p50": 0.1,
           "auto_vs_cascade_p50": 1 / 3, "adapt_1000_s": 300, "readapt_10_s": 30}


# -- query sets

def people_queries(set_name: str) -> list:
    """Records of people's recordings in a built set (tuxpaint descriptions, ktuberling words)."""
    from xmodal_core.data import ensure_dataset, load_manifest

    return [r for r in load_manifest(ensure_dataset(set_name)) if r.audio]


def names_of(set_name: str) -> list[str]:
    """Every name a set's pictures carry (entries: "A frog." -> "frog"), sorted."""
    from xmodal_core.adapt.vocabulary import entry_of
    from xmodal_core.data import load_manifest

    return sorted({entry_of(r.text) for r in load_manifest(set_name) if r.image and r.text})


def topk_hits(scores: np.ndarray, truth: Sequence[int], ks=(1, 5, 10)) -> dict[str, float]:
    order = np.argsort(-scores, axis=1)
    t = np.asarray(truth)[:, None]
    return {f"top{k}": float((order[:, :k] == t).any(axis=1).mean()) for k in ks}


# -- the two paths, query by query (each timed alone, models warm)

def direct_embed(run_dir: str, audios: Sequence[str]) -> tuple[np.ndarray, list[float]]:
    """(N, 384) adapted-head embeddings of the recordings and the per-query milliseconds
    (decode + Whisper encoder + head)."""
    from xmodal_core.audio import load_audio
    from xmodal_core.spaces import load_run_model

    model = load_run_model(run_dir)
    model.embed_speech([load_audio(audios[0])])  # warm
    out, ms = [], []
    for a in audios:
        t = time.perf_counter()
        out.append(model.embed_speech([load_audio(a)])[0])
        ms.append((time.perf_counter() - t) * 1000)
    return np.stack(out), ms


def cascade_embed(audios: Sequence[str]) -> tuple[np.ndarray, list[str], list[float]]:
    """MiniLM embeddings of Whisper transcripts, the transcripts and per-query ms (decode + ASR + MiniLM)."""
    from xmodal_core.audio import load_audio
    from xmodal_core.registry import get_encoder, get_transcriber

    asr, text = get_transcriber(), get_encoder("minilm")
    asr.transcribe([load_audio(audios[0])])
    out, texts, ms = [], [], []
    for a in audios:
        t = time.perf_counter()
        heard = asr.transcribe([load_audio(a)])[0]
        out.append(np.asarray(text.encode([heard or " "]))[0])
        ms.append((time.perf_counter() - t) * 1000)
        texts.append(heard)
    return np.stack(out), texts, ms


def p50(ms: Sequence[float]) -> float:
    return round(float(statistics.median(ms)), 2)


# -- evaluations

def name_eval(run_dir: str, queries: Sequence, names: Sequence[str], truth: Sequence[int],
              transcripts: Sequence[str] | None = None) -> dict[str, Any]:
    """Direct (adapted head) and cascade (transcript -> MiniLM) top-1/5/10 of the recordings among `names`."""
    from xmodal_core.adapt.core import text_embeddings

    names_emb = text_embeddings(names)
    q_direct, ms_direct = direct_embed(run_dir, [r.audio for r in queries])
    q_cascade, heard, ms_cascade = cascade_embed([r.audio for r in queries])
    return {"n": len(queries), "names": len(names),
            "direct": {**topk_hits(q_direct @ names_emb.T, truth), "p50_ms": p50(ms_direct)},
            "cascade": {**topk_hits(q_cascade @ names_emb.T, truth), "p50_ms": p50(ms_cascade)},
            "examples": [{"said": r.text, "heard": h, "direct": names[int(np.argmax(q_direct[i] @ names_emb.T))]}
                         for i, (r, h) in enumerate(zip(queries, heard)) if i < 12]}


def search_eval(gallery, queries: Sequence, positives: Sequence[set], modes: Sequence[str], adapted=None,
                ks=(1, 5, 10)) -> dict[str, Any]:
    """Each mode through `xmodal_core.search.search` (the product path): R@k over the gallery and
    p50 / p95 of the search's own per-stage total; for auto also which path answered."""
    from xmodal_core.audio import load_audio
    from xmodal_core.search import Query, search

    rng = np.random.default_rng()  # a new dither every run and mode: no transcript is ever cached

    def fresh(path: str) -> Query:
        """The recording plus an inaudible dither (1e-6 of full scale), so no transcript cache
        answers a cascade query: every search pays for what it runs."""
        x = load_audio(path).samples
        return Query.from_input("speech", (16_000, x + rng.normal(0, 1e-6, len(x)).astype(np.float32)))

    out: dict[str, Any] = {}
    for mode in modes:
        hits, ms, paths_ = [], [], []
        search(gallery, fresh(queries[0].audio), mode, k=max(ks), adapted=adapted)  # warm
        for r, pos in zip(queries, positives):
            result = search(gallery, fresh(r.audio), mode, k=max(ks), adapted=adapted)
            ranked = [h.item.id for h in result.hits]
            hits.append([any(i in pos for i in ranked[:k]) for k in ks])
            ms.append(result.total_ms)
            paths_.append(result.path or mode)
        arr = np.asarray(hits, dtype=float)
        out[mode] = {**{f"r@{k}": float(arr[:, j].mean()) for j, k in enumerate(ks)}, "p50_ms": p50(ms),
                     "p95_ms": round(float(np.percentile(ms, 95)), 2), "n": len(queries)}
        if mode == "auto":
            out[mode]["answered_direct"] = float(np.mean([p == "direct" for p in paths_]))
    return out


def positives_by_group(gallery, set_name: str, queries: Sequence) -> list[set]:
    """For each recording, the gallery items that show what it says (same group in the set)."""
    from xmodal_core.data import load_manifest

    group = {r.id: r.group for r in load_manifest(set_name) if r.image}
    by_group: dict[str, set] = {}
    for it in gallery.items:
        if it.id in group:
            by_group.setdefault(group[it.id], set()).add(it.id)
    return [by_group.get(r.group, set()) for r in queries]


def fsdd_eval(run_dir: str) -> dict[str, Any]:
    """Zero-shot top-1 of the adapted head on every FSDD recording among the ten digit words."""
    from xmodal_core.adapt.core import head_embed, speech_features, text_embeddings
    from xmodal_core.adapt.vocabulary import DIGIT_WORDS
    from xmodal_core.data import ensure_dataset, load_manifest

    records = [r for r in load_manifest(ensure_dataset("fsdd")) if r.audio]
    q = head_embed(run_dir, speech_features(records))
    pred = np.argmax(q @ text_embeddings(DIGIT_WORDS).T, axis=1)
    truth = np.array([DIGIT_WORDS.index(r.label) for r in records])
    ok = pred == truth
    speakers = sorted({r.speaker for r in records})
    return {"top1": float(ok.mean()), "n": len(records),
            "by_speaker": {s: float(ok[[r.speaker == s for r in records]].mean()) for s in speakers}}


# -- the out-of-vocabulary mix for `auto`

def oov_split(names: Sequence[str], salt: str = "xmodal-oov-v1") -> set[str]:
    """A third of the names, chosen by a salted hash (left out of the adaptation for the `auto` test)."""
    from xmodal_core.data.manifest import hash_unit

    return {n for n in names if hash_unit(n, salt) < 1 / 3}


def auto_eval(base, gallery, queries, positives, cfg) -> dict[str, Any]:
    """Adapt to the base vocabulary minus a third of the recordings' names (same recipe, from scratch),
    then direct / cascade / auto on all recordings: the left-out third are out of vocabulary."""
    from xmodal_core.adapt.core import adapt_vocabulary
    from xmodal_core.adapt.vocabulary import Vocabulary, entry_of, gallery_vocabulary

    said = sorted({entry_of(r.text) for r in queries})
    left_out = oov_split(said)
    full = gallery_vocabulary(gallery)
    vocab = Vocabulary([e for e in full.entries if e.text not in left_out])
    report = adapt_vocabulary("bench-oov", vocab, config=cfg, full=True)
    from xmodal_core.adapt import load_state

    state = load_state("bench-oov")
    res = search_eval(gallery, queries, positives, ("direct", "cascade", "auto"), adapted=state)
    known = [entry_of(r.text) not in left_out for r in queries]
    return {"left_out_names": sorted(left_out), "queries_in_vocabulary": int(sum(known)),
            "queries_out_of_vocabulary": int(len(known) - sum(known)), "threshold": state.threshold,
            "adaptation": report.to_dict(), "results": res}


# -- adaptation cost

def unseen_words(n: int, exclude: Sequence[str], cfg) -> list[str]:
    """`n` general English words none of whose clips are in the clip cache (a home that ran the
    vocabulary curve has spoken most of the word pool already), drawn afresh each run."""
    from xmodal_core.adapt.core import general_words
    from xmodal_core.adapt.speech import missing_clips, plan_utterances, voice_pools
    from xmodal_core.adapt.vocabulary import Entry

    pools = voice_pools(cfg.engines)
    out: list[str] = []
    for w in general_words(10**6, exclude, seed=int(time.time())):
        plan = plan_utterances([Entry(w, (w,), "general")], cfg.plan_config(), pools)
        if len(missing_clips(plan)) == len(plan):
            out.append(w)
            if len(out) == n:
                return sorted(out)
    raise RuntimeError(f"only {len(out)} general words have no cached clips here; use a fresh XMODAL_HOME")


def warm_replay(vocab, cfg, start) -> None:
    """Render and encode the old clips the first timed adaptation replays (a sample of the base
    vocabulary's), as a home that adapted before has them; the new words' clips stay uncached."""
    from xmodal_core.adapt.core import _voices_for, choose_utterances, clip_records, speech_features
    from xmodal_core.adapt.speech import plan_utterances, render_clips, voice_pools

    plan = plan_utterances(vocab.entries, cfg.plan_config(), voice_pools(cfg.engines), voices_for=_voices_for(cfg))
    old = set(start.vocabulary)
    replay = [u for u in choose_utterances(plan, old, set(vocab.texts) - old, cfg, True) if u.entry in old]
    clips, _ = render_clips(replay)
    speech_features(clip_records(replay, clips))


def timing_eval(cfg, n_new: int = 1000, n_more: int = 10) -> dict[str, Any]:
    """Adapt to `n_new` general English words beyond the base vocabulary, then to `n_more` more,
    each time in an incremental run from the base head, with the clip and feature caches of a home
    that adapted before (the clips the first run replays cached, the new words never spoken):
    seconds per stage."""
    from xmodal_core.adapt.core import adapt_vocabulary, base_state
    from xmodal_core.adapt.vocabulary import VocabularyBuilder, base_vocabulary

    base = base_vocabulary().build()
    words = unseen_words(n_new + n_more, base.texts, cfg)  # new words each run: cold caches
    out = {}
    start = base_state(install=True)

    def vocabulary(extra):
        b = VocabularyBuilder()
        for e in base.entries:
            b.add(e.text, e.source)
        b.add_all(extra, "general")
        return b.build()

    warm_replay(vocabulary(words[:n_new]), cfg, start)
    for label, extra in ((f"{n_new} new names", words[:n_new]), (f"{n_more} more names", words)):
        report = adapt_vocabulary("bench-timing", vocabulary(extra), config=cfg, start=start)
        out[label] = {"seconds": report.seconds, "mode": report.mode, "clips": report.clips,
                      "synthesised": report.clips_made, "new_entries": report.new_entries,
                      "heldout_top1": report.metrics.get("heldout_top1")}
        from xmodal_core.adapt import load_state

        start = load_state("bench-timing")
    return out


# -- curves

def _tux_names_top(run_dir: str) -> dict[str, float]:
    from xmodal_core.adapt.core import head_embed, speech_features, text_embeddings
    from xmodal_core.adapt.vocabulary import entry_of

    queries, names = people_queries("tuxpaint"), names_of("tuxpaint")
    index = {n: i for i, n in enumerate(names)}
    q = head_embed(run_dir, speech_features(queries))
    return topk_hits(q @ text_embeddings(names).T, [index[entry_of(r.text)] for r in queries])


def voices_curve(cfg, counts=(1, 3, 5, 10, 20)) -> list[dict[str, Any]]:
    """Full adaptations of the default gallery with the first n voices per name (the clips of a
    smaller n are a prefix of a larger n's, so only the largest is synthesised)."""
    from dataclasses import replace

    from xmodal_core.adapt import load_state
    from xmodal_core.adapt.core import adapt_vocabulary
    from xmodal_core.adapt.vocabulary import gallery_vocabulary
    from xmodal_core.gallery import open_gallery

    vocab = gallery_vocabulary(open_gallery("default"))
    out = []
    for n in counts:
        report = adapt_vocabulary(f"bench-voices-{n}", vocab, config=replace(cfg, voices=n), full=True)
        state = load_state(f"bench-voices-{n}")
        out.append({"voices": n, "clips": report.clips, "heldout_top1": report.metrics["heldout_top1"],
                    "tux_people": _tux_names_top(state.run_dir), "train_s": report.seconds["training"]})
        print(f"voices {n}: {out[-1]}", file=sys.stderr, flush=True)
    return out


def curve_pool(exclude: Sequence[str], n_base: int) -> list[str]:
    """Every general word in one fixed random order, so each factor's words are a prefix of the next's.

    The first 4 x n_base words (what 5x adds) are a seeded draw, shuffled (the order the curve was
    first measured in, up to 5x); the remaining words follow in their own seeded order."""
    from xmodal_core.adapt.core import general_words

    first = general_words(4 * n_base, exclude, seed=7)
    first = [first[i] for i in np.random.default_rng(7).permutation(len(first))]
    taken = set(first)
    rest = [w for w in general_words(10 ** 9, exclude) if w not in taken]
    return first + [rest[i] for i in np.random.default_rng(8).permutation(len(rest))]


def vocabulary_curve(cfg, factors=(1, 2, 5, 10), general_voices: int = 3,
                     on_row: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Full adaptations to the default vocabulary plus (factor - 1) x as many general English
    words (said by `general_voices` voices each, the default names by the recipe's): top-1 on
    held-out voices and on people's Tux Paint recordings among the stamp names.

    The general words of a smaller factor are a prefix of a larger one's (`curve_pool`), so each
    factor synthesises only the words it adds. `on_row(rows)` is called after every factor."""
    from xmodal_core.adapt import load_state
    from xmodal_core.adapt.core import adapt_vocabulary
    from xmodal_core.adapt.vocabulary import Entry, Vocabulary, gallery_vocabulary
    from xmodal_core.gallery import open_gallery

    base = gallery_vocabulary(open_gallery("default"))
    pool = curve_pool(base.texts, len(base))
    out = []
    for f in factors:
        extra = pool[:(f - 1) * len(base)]  # 10x asks for 18,990 words and MiniLM has 18,975: all of them
        vocab = Vocabulary(base.entries + [Entry(w, (w,), "general") for w in extra])
        few = set(extra)
        report = adapt_vocabulary(f"bench-vocab-{f}x", vocab, config=cfg, full=True,
                                  voices_for=lambda e: general_voices if e.text in few else None)
        state = load_state(f"bench-vocab-{f}x")
        out.append({"factor": f, **stamp(), "entries": len(vocab), "general_voices": general_voices,
                    "clips": report.clips,
                    "heldout_top1": report.metrics["heldout_top1"], "tux_people": _tux_names_top(state.run_dir),
                    "seconds": report.seconds})
        print(f"vocabulary {f}x: {out[-1]}", file=sys.stderr, flush=True)
        if on_row:
            on_row(out)
    return out


# -- main

def tuxpaint_section(state) -> dict[str, Any]:
    from xmodal_core.adapt.vocabulary import entry_of
    from xmodal_core.gallery import open_gallery

    queries = people_queries("tuxpaint")
    names = names_of("tuxpaint")
    index = {n: i for i, n in enumerate(names)}
    out = {"names": name_eval(state.run_dir, queries, names, [index[entry_of(r.text)] for r in queries])}
    gallery = open_gallery("default")
    positives = positives_by_group(gallery, "tuxpaint", queries)
    out["pictures"] = search_eval(gallery, queries, positives, ("direct", "cascade", "auto", "coarse"), adapted=state)
    out["pictures"]["gallery_items"] = len(gallery)
    return out


def ktuberling_section(cfg) -> dict[str, Any]:
    from xmodal_core.adapt import adapt, load_state
    from xmodal_core.adapt.vocabulary import entry_of
    from xmodal_core.gallery import open_gallery

    gallery = open_gallery("ktuberling")
    report = adapt("ktuberling", config=cfg)
    state = load_state("ktuberling")
    queries = [r for r in people_queries("ktuberling")]
    positives = positives_by_group(gallery, "ktuberling", queries)
    keep = [i for i, p in enumerate(positives) if p]  # words whose object no theme draws cannot be found
    queries, positives = [queries[i] for i in keep], [positives[i] for i in keep]
    names = sorted({entry_of(it.caption) for it in gallery.items if it.caption})
    index = {n: i for i, n in enumerate(names)}
    return {"adaptation": report.to_dict(), "gallery_items": len(gallery),
            "names": name_eval(state.run_dir, queries, names, [index[entry_of(r.text)] for r in queries]),
            "pictures": search_eval(gallery, queries, positives, ("direct", "cascade", "auto"), adapted=state)}


def verdict(results: dict[str, Any]) -> dict[str, bool]:
    out = {}
    tux = results.get("tuxpaint")
    if tux:
        d, c = tux["names"]["direct"], tux["names"]["cascade"]
        pics = tux["pictures"]
        out["tux_name_top1>=0.75"] = d["top1"] >= TARGETS["tux_name_top1"]
        out["tux_name_top10>=0.85"] = d["top10"] >= TARGETS["tux_name_top10"]
        out["tux_picture_r@10>=cascade"] = pics["direct"]["r@10"] >= pics["cascade"]["r@10"]
        out["direct_p50<=cascade/10"] = d["p50_ms"] <= TARGETS["direct_vs_cascade_p50"] * c["p50_ms"]
    kt = results.get("ktuberling")
    if kt:
        out["ktuberling_top1>=cascade"] = kt["pictures"]["direct"]["r@1"] >= kt["pictures"]["cascade"]["r@1"]
    if "fsdd" in results:
        out["fsdd_top1>=0.95"] = results["fsdd"]["top1"] >= TARGETS["fsdd_top1"]
    auto = results.get("auto", {}).get("results")
    if auto:
        best = max(auto["direct"]["r@10"], auto["cascade"]["r@10"])
        out["auto_r@10>=best"] = auto["auto"]["r@10"] >= best
        out["auto_p50<=cascade/3"] = auto["auto"]["p50_ms"] <= TARGETS["auto_vs_cascade_p50"] * auto["cascade"]["p50_ms"]
    timing = results.get("timing")
    if timing:
        first, second = list(timing.values())
        out["adapt_1000<=300s"] = first["seconds"]["total"] <= TARGETS["adapt_1000_s"]
        out["readapt_10<=30s"] = second["seconds"]["total"] <= TARGETS["readapt_10_s"]
    return out


VOCABULARY_OUT = "adapt_vocabulary"
VOCABULARY_NOTE = ("python -m bench.adapt --only vocabulary: full adaptations to the default gallery's vocabulary "
                   "plus (factor - 1) x as many general English words from MiniLM's vocabulary (3 voices each; "
                   "the gallery's names keep the recipe's 20); held-out = synthetic voices held out of training, "
                   "people = the 65 Tux Paint recordings among the 774 stamp names (never trained on)")


def kept_vocabulary_rows(factors: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of bench/results/adapt_vocabulary.json that this run does not re-measure, so the curve
    can be measured a factor at a time (`--factors 5 10` after `--factors 1 2`): every factor draws from
    one word order (`curve_pool`). Each row keeps its own date and commit."""
    from bench._common import RESULTS_DIR

    path = RESULTS_DIR / f"{VOCABULARY_OUT}.json"
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    measured = {"date": doc.get("date"), "git_commit": (doc.get("machine") or {}).get("git_commit")}
    rows = [{**measured, **r} for r in doc.get("vocabulary", [])]
    return [r for r in rows if r["factor"] not in factors]


def merge_rows(kept: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(kept + rows, key=lambda r: r["factor"])


SECTIONS = ("tuxpaint", "ktuberling", "fsdd", "auto", "timing", "voices", "vocabulary")


def main(argv=None) -> int:
    from xmodal_core.adapt import base_state
    from xmodal_core.adapt.shipped import load_recipe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    p.add_argument("--timing-voices", type=int, default=None, help="voices per name in the timing section")
    p.add_argument("--factors", type=int, nargs="*", default=[1, 2, 5, 10],
                   help="vocabulary sizes of the vocabulary curve, as multiples of the default vocabulary")
    p.add_argument("--out", default="adapt", help="result name under bench/results/")
    args = p.parse_args(argv)
    sections = args.only or SECTIONS
    cfg = load_recipe()
    state = base_state(install=True)
    results: dict[str, Any] = {"base": {"run_id": state.run_id, "vocabulary": state.size,
                                        "heldout": state.metrics, "threshold": state.threshold}}
    for name in sections:
        t = time.perf_counter()
        if name == "tuxpaint":
            results[name] = tuxpaint_section(state)
        elif name == "ktuberling":
            results[name] = ktuberling_section(cfg)
        elif name == "fsdd":
            results[name] = fsdd_eval(state.run_dir)
        elif name == "auto":
            from xmodal_core.gallery import open_gallery

            gallery = open_gallery("default")
            queries = people_queries("tuxpaint")
            results[name] = auto_eval(state, gallery, queries, positives_by_group(gallery, "tuxpaint", queries), cfg)
        elif name == "timing":
            from dataclasses import replace

            results[name] = timing_eval(replace(cfg, voices=args.timing_voices or cfg.voices))
        elif name == "voices":
            results[name] = voices_curve(cfg)
        elif name == "vocabulary":  # hours of synthesis at 10x: its rows land in their own file as they come
            kept = kept_vocabulary_rows(args.factors)
            results[name] = vocabulary_curve(cfg, tuple(args.factors), on_row=lambda rows: write_result(
                VOCABULARY_OUT, {"base": results["base"], "vocabulary": merge_rows(kept, rows),
                                 "note": VOCABULARY_NOTE}))
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 1)
        print(f"{name}: done in {results['seconds'][name]:.0f} s", file=sys.stderr, flush=True)
    results["targets"] = TARGETS
    results["met"] = verdict(results)
    path = write_result(args.out, results)
    print(json.dumps(results["met"], indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
