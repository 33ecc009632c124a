"""Synthetic speech for training: any text, several engines and voices, 16 kHz mono WAV.

Engines are the installed command-line synthesisers: espeak-ng (English voices x
variants, with seeded rate and pitch jitter), flite, and festival when installed.
The same request always gives the same file: jitter is drawn from a seeded hash of
(seed, voice, text), and outputs are cached on disk under
sha256(engine, voice, settings, text) in `datasets_dir()/_tts` (or `$XMODAL_TTS_CACHE`).

    paths = speak_texts(["zero", "one", "two"], voices=default_voices(), per_text=3, seed=0)

Synthetic voices stand in for speakers: `voice_person` says which voices are the same
person (flite's kal and festival's kal_diphone are one man), so splits can keep people apart.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from xmodal_core import paths
from xmodal_core.errors import AudioError, DatasetError, InputError
from xmodal_core.fsio import atomic_path

ENGINES = ("espeak-ng", "flite", "festival")
# Part of every cache key: bump when the output format or the engine invocation changes.
TTS_VERSION = "tts-1"
SAMPLE_RATE = 16_000
WORKERS = 2
MAX_SECONDS = 60.0
ESPEAK_RATE = 175        # espeak-ng default words per minute
RATE_JITTER = 0.15       # rate multiplier drawn from [1 - j, 1 + j]
PITCH_RANGE = (35, 65)   # espeak-ng pitch (0-99, default 50)
# espeak-ng variants that sound like a plain voice (the others whisper, croak or buzz).
DEFAULT_ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                           "klatt", "klatt2", "klatt3")
# flite's awb_time can only say clock times; kal is the 8 kHz copy of kal16.
_FLITE_EXCLUDED = {"awb_time", "kal"}
# Voices of the same recorded person across engines (everything else is its own person).
_PERSONS = {"flite:kal": "kal", "flite:kal16": "kal", "festival:kal_diphone": "kal",
            "flite:slt": "slt", "festival:cmu_us_slt_arctic_hts": "slt",
            "flite:awb": "awb", "flite:rms": "rms", "festival:ked_diphone": "ked"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(\+[A-Za-z0-9_.\-]+)?$")

Progress = Callable[[int, int], None]


@dataclass(frozen=True, order=True)
class Voice:
    """One synthetic speaker: an engine and its voice name ("en-us+f3", "slt", "kal_diphone")."""

    engine: str
    name: str

    @property
    def id(self) -> str:
        """"engine:name", the `speaker` of records spoken with this voice."""
        return f"{self.engine}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> "Voice":
        """"espeak-ng:en-us+f3" -> Voice("espeak-ng", "en-us+f3"); checks the engine and the name's form."""
        engine, sep, name = text.partition(":")
        if not sep or engine not in ENGINES or not _SAFE_NAME.match(name):
            raise InputError(f"{text!r} is not a voice; write ENGINE:NAME with ENGINE one of {', '.join(ENGINES)} "
                             "(e.g. espeak-ng:en-us+f3, flite:slt, festival:kal_diphone); `list_voices()` shows them")
        return cls(engine, name)


def voice_person(voice: Voice) -> str:
    """Who the voice is: recorded voices of one person share a key; formant voices are each their own."""
    return _PERSONS.get(voice.id, voice.id)


def voice_family(voice: Voice) -> str:
    """"espeak-ng" for formant voices, "recorded" for voices built from a person's recordings."""
    return "espeak-ng" if voice.engine == "espeak-ng" else "recorded"


@dataclass(frozen=True)
class SpeechRequest:
    """One utterance to synthesise.

    Attributes:
        text: what to say.
        voice: who says it.
        rate: speaking-rate multiplier (1.0 = the engine's default).
        pitch: espeak-ng pitch 0-99 (None = default 50; other engines ignore it).
    """

    text: str
    voice: Voice
    rate: float = 1.0
    pitch: int | None = None

    def settings(self) -> dict:
        return {"rate": round(self.rate, 4), "pitch": self.pitch}

    def key(self) -> str:
        """sha256 of (version, engine, voice, settings, text): the cache file name."""
        blob = json.dumps([TTS_VERSION, self.voice.engine, self.voice.name, self.settings(), self.text],
                          ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def tts_cache_dir() -> Path:
    """Where synthesised WAVs live: `$XMODAL_TTS_CACHE`, else `datasets_dir()/_tts`."""
    env = os.environ.get("XMODAL_TTS_CACHE")
    path = Path(env).expanduser() if env else paths.datasets_dir() / "_tts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_path(request: SpeechRequest) -> Path:
    key = request.key()
    return tts_cache_dir() / key[:2] / f"{key}.wav"


# --- engines and voices --------------------------------------------------------------------

def _engine_binary(engine: str) -> str:
    return {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}[engine]


def available_engines() -> list[str]:
    """Engines whose command is installed here, in `ENGINES` order."""
    return [e for e in ENGINES if shutil.which(_engine_binary(e))]


def _run(cmd: list[str], *, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise DatasetError(f"{cmd[0]} is not installed: install it (Debian espeak-ng, flite or festival)") from None
    except subprocess.TimeoutExpired:
        raise DatasetError(f"{cmd[0]} did not finish within {timeout:.0f} s") from None


@functools.lru_cache(maxsize=None)
def _espeak_table(kind: str) -> tuple[tuple[str, str], ...]:
    """(language, file) rows of `espeak-ng --voices=KIND`."""
    out = _run(["espeak-ng", f"--voices={kind}"]).stdout.decode("utf-8", "replace").splitlines()
    rows = []
    for line in out[1:]:
        cols = line.split()
        if len(cols) >= 5:
            rows.append((cols[1], cols[4]))
    return tuple(rows)


def espeak_english_voices() -> list[str]:
    """espeak-ng's own English voices (language codes, e.g. "en-us"); MBROLA voices are left out."""
    seen = []
    for lang, file in _espeak_table("en"):
        if file.startswith("gmw/") and lang.startswith("en") and lang not in seen:
            seen.append(lang)
    return seen


def espeak_variants() -> list[str]:
    """espeak-ng voice variants ("m3", "f2", "klatt", ...)."""
    return [file.split("/", 1)[1] for _, file in _espeak_table("variant") if file.startswith("!v/")]


@functools.lru_cache(maxsize=None)
def _flite_voices() -> tuple[str, ...]:
    out = _run(["flite", "-lv"]).stdout.decode("utf-8", "replace")
    names = out.split(":", 1)[1].split() if ":" in out else []
    return tuple(n for n in names if n not in _FLITE_EXCLUDED)


@functools.lru_cache(maxsize=None)
def _festival_voices() -> tuple[str, ...]:
    out = _run(["festival", "--pipe"], input=b"(print (voice.list))\n", timeout=60).stdout.decode("utf-8", "replace")
    m = re.search(r"\(([^()]*)\)\s*$", out.strip())
    return tuple(m.group(1).split()) if m else ()


def list_voices(engine: str | None = None, *, variants: Sequence[str] | None = None) -> list[Voice]:
    """Voices the installed engines offer, asked from the engines themselves.

    Args:
        engine: one engine, or None for every installed one.
        variants: espeak-ng variants to combine with each English voice ("" = none);
            None = every variant espeak-ng lists (8 voices x ~100 variants).
    """
    engines = [engine] if engine else available_engines()
    out: list[Voice] = []
    for e in engines:
        if e not in ENGINES:
            raise InputError(f"unknown TTS engine {e!r}; use one of {', '.join(ENGINES)}")
        if not shutil.which(_engine_binary(e)):
            continue
        if e == "espeak-ng":
            vs = [""] + espeak_variants() if variants is None else list(variants)
            out += [Voice(e, f"{lang}+{v}" if v else lang) for lang in espeak_english_voices() for v in vs]
        elif e == "flite":
            out += [Voice(e, n) for n in _flite_voices()]
        else:
            out += [Voice(e, n) for n in _festival_voices()]
    return out


def default_voices(engines: Sequence[str] | None = None) -> list[Voice]:
    """A broad, clean default: 8 espeak-ng English voices x 16 plain variants, flite and festival voices."""
    out: list[Voice] = []
    for e in engines or available_engines():
        out += list_voices(e, variants=DEFAULT_ESPEAK_VARIANTS if e == "espeak-ng" else None)
    return out


def check_voice(voice: Voice) -> None:
    """Raise `InputError` when the voice is not offered by its (installed) engine."""
    if voice.engine not in available_engines():
        installed = ", ".join(available_engines()) or "none"
        raise InputError(f"TTS engine {voice.engine} is not installed here; installed: {installed}")
    if voice.engine == "espeak-ng":
        lang, _, variant = voice.name.partition("+")
        ok = lang in espeak_english_voices() and (not variant or variant in espeak_variants())
    else:
        ok = voice.name in (_flite_voices() if voice.engine == "flite" else _festival_voices())
    if not ok:
        raise InputError(f"{voice.id} is not an installed voice; e.g. {', '.join(v.id for v in default_voices()[:3])}")


# --- requests --------------------------------------------------------------------------------

def seeded_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded by a hash of the parts (stable across runs and machines)."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def request_for(text: str, voice: Voice, *, seed: int = 0, jitter: bool = True) -> SpeechRequest:
    """The request for one (text, voice): rate (and espeak-ng pitch) jittered from a hash of (seed, voice, text)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("cannot speak an empty text")
    if not jitter:
        return SpeechRequest(text.strip(), voice)
    rng = seeded_rng("jitter", seed, voice.id, text)
    rate = 1.0 + rng.uniform(-RATE_JITTER, RATE_JITTER)
    pitch = rng.randint(*PITCH_RANGE) if voice.engine == "espeak-ng" else None
    return SpeechRequest(text.strip(), voice, rate=round(rate, 3), pitch=pitch)


def plan_speech(texts: Sequence[str], voices: Sequence[Voice | str] | None = None, *, per_text: int = 1, seed: int = 0,
                jitter: bool = True) -> list[SpeechRequest]:
    """Requests for `per_text` distinct voices per text, drawn from `voices` by a seeded hash of the text.

    Returns len(texts) * min(per_text, len(voices)) requests, text-major.
    """
    pool = [Voice.parse(v) if isinstance(v, str) else v for v in (voices if voices is not None else default_voices())]
    if not pool:
        raise DatasetError("no TTS voices: install espeak-ng, flite or festival")
    if per_text < 1:
        raise InputError(f"per_text must be at least 1, got {per_text}")
    for v in set(pool):
        check_voice(v)
    k = min(per_text, len(pool))
    out = []
    for text in texts:
        chosen = seeded_rng("voices", seed, text).sample(pool, k)
        out += [request_for(text, v, seed=seed, jitter=jitter) for v in chosen]
    return out


# --- synthesis -------------------------------------------------------------------------------

def _synthesize_raw(req: SpeechRequest, tmpdir: Path) -> bytes:
    """The engine's WAV bytes for one request (any rate, mono)."""
    v = req.voice
    if v.engine == "espeak-ng":
        rate, pitch = round(ESPEAK_RATE * req.rate), req.pitch or 50
        pcm = _ask_worker(_ESPEAK, _ESPEAK_WORKER, lambda server: server.say(v.name, rate, pitch, req.text))
        if pcm is not None:
            return _wav_bytes(*pcm)
        cmd = ["espeak-ng", "-v", v.name, "-s", str(rate), "-p", str(pitch), "--stdout"]
        proc = _run(cmd, input=req.text.encode("utf-8"))
        if proc.returncode != 0:
            raise AudioError(f"espeak-ng failed for {v.id}: {proc.stderr.decode('utf-8', 'replace').strip()}")
        return proc.stdout
    txt, wav = tmpdir / "text.txt", tmpdir / "out.wav"
    txt.write_text(req.text + "\n", encoding="utf-8")
    stretch = f"{1.0 / req.rate:.4f}"
    if v.engine == "festival":
        server = _FESTIVAL.acquire()
        try:
            server.say(v.name, stretch, txt, wav)
        finally:
            _FESTIVAL.release(server)
        return wav.read_bytes()
    if _ask_worker(_FLITE, _FLITE_WORKER, lambda server: server.say(v.name, stretch, txt, wav)) is not None:
        return wav.read_bytes()
    cmd = ["flite", "-voice", v.name, "--setf", f"duration_stretch={stretch}", "-f", str(txt), "-o", str(wav)]
    proc = _run(cmd)
    if proc.returncode != 0 or not wav.is_file():
        raise AudioError(f"{v.engine} failed for {v.id}: {proc.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    return wav.read_bytes()


def _ask_worker(pool: _Pool, usable: list[bool], call: Callable[[Any], Any]) -> Any:
    """`call(worker)` on an idle worker of `pool`; None when workers are off (`usable` is [False]) or
    this one was lost, which turns them off for good: the command still works, a few ms a clip slower."""
    if not usable[0]:
        return None
    server = pool.acquire()
    try:
        return call(server)
    except _WorkerLost:
        usable[0] = False
        return None
    finally:
        pool.release(server)


def _wav_bytes(sample_rate: int, pcm: bytes) -> bytes:
    """A mono 16-bit WAV file of `pcm`."""
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


# espeak-ng and flite: one `_espeak_worker` / `_flite_worker` process per thread (see their
# docstrings); [False] after a worker is lost, and every later request runs the command instead.
_ESPEAK_WORKER = [True]
_FLITE_WORKER = [True]

# festival: one long-lived process per worker. Starting festival and loading a voice costs 0.3-1 s
# (the HTS voice most), which made each festival clip ~50x the cost of an espeak-ng one; in a running
# process a short name takes 20-70 ms. `xmodal_say` is text2wave's own main (tts_file with its hook
# that joins the utterances' waves), so the WAV bytes are the ones `text2wave -eval (voice_V)
# -eval (Parameter.set 'Duration_Stretch S) FILE -o OUT` writes.
_FESTIVAL_SETUP = """
(gc-status nil)
(defvar xmodal_fp nil)
(defvar xmodal_total 0)
(defvar xmodal_utt nil)
(define (xmodal_record utt)
  (if (eq? xmodal_total 0)
      (wave.save.header xmodal_fp (utt.wave utt) 'riff nil (list (list "numsamples" 0))))
  (set! xmodal_total (+ xmodal_total (get_param 'num_samples (wave.info (utt.wave utt)) 0)))
  (wave.save.data.fp (utt.wave utt) xmodal_fp 'riff nil)
  (set! xmodal_utt utt))
(define (xmodal_say infile outfile)
  (set! xmodal_total 0)
  (set! xmodal_utt nil)
  (set! xmodal_fp (fopen outfile "wb"))
  (set! tts_hooks (list utt.synth xmodal_record))
  (tts_file infile (tts_find_text_mode infile auto-text-mode-alist))
  (fseek xmodal_fp 0 0)
  (wave.save.header xmodal_fp (utt.wave xmodal_utt) 'riff nil (list (list "numsamples" xmodal_total)))
  (fclose xmodal_fp))
"""


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _FestivalServer:
    """A `festival --pipe` process that speaks one request at a time; a marker on stderr ends each.

    Errors inside festival (SIOD ERROR ...) come back on stderr before the marker and the process
    carries on; a process that dies or does not answer within `timeout` is killed and replaced.
    """

    def __init__(self) -> None:
        try:
            self.proc = subprocess.Popen(["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise DatasetError("festival is not installed: install it (Debian festival)") from None
        self.count = 0
        self._send(_FESTIVAL_SETUP, timeout=60)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, commands: str, timeout: float) -> str:
        import select
        import time

        self.count += 1
        marker = f"XMODAL-DONE-{os.getpid()}-{self.count}".encode()
        try:
            self.proc.stdin.write(commands.encode("utf-8") + b'\n(format stderr "' + marker + b'\\n")\n')
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            raise AudioError("festival stopped unexpectedly; try again") from None
        out, deadline, fd = b"", time.monotonic() + timeout, self.proc.stderr.fileno()
        while marker not in out:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            chunk = os.read(fd, 65536) if ready else None
            if not chunk:
                self.close()
                if chunk is None:
                    raise DatasetError(f"festival did not finish within {timeout:.0f} s")
                raise AudioError(f"festival stopped unexpectedly: {out.decode('utf-8', 'replace').strip()[-300:]}")
            out += chunk
        return out.split(marker)[0].decode("utf-8", "replace").strip()

    def say(self, voice: str, stretch: str, txt: Path, wav: Path, timeout: float = 120) -> None:
        err = self._send(f"(voice_{voice})\n(Parameter.set 'Duration_Stretch {stretch})\n"
                         f"(xmodal_say {_scheme_string(str(txt))} {_scheme_string(str(wav))})", timeout)
        if "SIOD ERROR" in err or not wav.is_file() or wav.stat().st_size <= 44:
            raise AudioError(f"festival failed for festival:{voice}: {err[-300:] or 'no audio written'}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class _WorkerServer:
    """A worker process (`module`) with an engine's library loaded once: one JSON request line in,
    one JSON answer line (and `bytes` bytes of payload) out. Raises `_WorkerLost` when the process
    dies or stops answering (the caller falls back to the command), AudioError on a refusal."""

    module = ""
    engine = ""

    def __init__(self) -> None:
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", self.module], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=paths.subprocess_env())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, request: dict, timeout: float = 120) -> tuple[dict, bytes]:
        import threading

        timer = threading.Timer(timeout, self.close)  # a hung worker is killed, and the read below ends
        timer.start()
        try:
            self.proc.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
            self.proc.stdin.flush()
            head = json.loads(self.proc.stdout.readline() or b"null")
            if head is None:
                raise OSError("no answer")
            payload = self.proc.stdout.read(int(head.get("bytes", 0))) if head.get("bytes") else b""
            if len(payload) != int(head.get("bytes", 0)):
                raise OSError("short answer")
        except (OSError, ValueError) as exc:
            self.close()
            raise _WorkerLost(str(exc)) from None
        finally:
            timer.cancel()
        if not head.get("ok"):
            raise AudioError(f"{self.engine} failed for {self.engine}:{request.get('voice')}: {head.get('error')}")
        return head, payload

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class _EspeakServer(_WorkerServer):
    """A `_espeak_worker` process: libespeak-ng loaded once, the command's samples per request."""

    module, engine = "xmodal_core.data._espeak_worker", "espeak-ng"

    def say(self, voice: str, rate: int, pitch: int, text: str, timeout: float = 120) -> tuple[int, bytes]:
        """(sample rate, 16-bit PCM) of the request."""
        head, pcm = self.ask({"voice": voice, "rate": rate, "pitch": pitch, "text": text}, timeout)
        return int(head["sample_rate"]), pcm


class _FliteServer(_WorkerServer):
    """A `_flite_worker` process: libflite and its voices loaded once, the command's WAV file per request."""

    module, engine = "xmodal_core.data._flite_worker", "flite"

    def say(self, voice: str, stretch: str, txt: Path, wav: Path, timeout: float = 120) -> Path:
        """Writes `wav` (the command's file) and returns it."""
        self.ask({"voice": voice, "stretch": stretch, "text_file": str(txt), "wav_file": str(wav)}, timeout)
        if not wav.is_file() or wav.stat().st_size <= 44:
            raise AudioError(f"flite failed for flite:{voice}: no audio written")
        return wav


class _WorkerLost(Exception):
    """A long-lived engine process died or stopped answering: the caller falls back to the command."""


class _Pool:
    """Idle engine processes; a thread takes one (or starts one) per request and gives it back."""

    def __init__(self, factory: Callable[[], object]) -> None:
        import threading

        self._factory = factory
        self._lock = threading.Lock()
        self._idle: list = []
        self._pid = os.getpid()

    def acquire(self):
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not talk to its parent's processes
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                server = self._idle.pop()
                if server.alive():
                    return server
        return self._factory()

    def release(self, server) -> None:
        if server.alive() and self._pid == os.getpid():
            with self._lock:
                self._idle.append(server)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for server in idle:
            server.close()


_FESTIVAL = _Pool(_FestivalServer)
_ESPEAK = _Pool(_EspeakServer)
_FLITE = _Pool(_FliteServer)
for _pool in (_FESTIVAL, _ESPEAK, _FLITE):
    atexit.register(_pool.close)


def synthesize_one(req: SpeechRequest) -> Path:
    """Speak one request into the cache (or find it there); returns the 16 kHz mono WAV path.

    Raises `AudioError` when the engine fails or produces empty or silent audio,
    `InputError` when the voice is not installed.
    """
    import soundfile as sf

    out = cache_path(req)
    if out.is_file() and out.stat().st_size > 44:
        return out
    samples = synthesize_samples(req)
    # atomic_path's temporary name is unique: two processes may synthesise the same request at once.
    with atomic_path(out) as tmp_path:
        sf.write(tmp_path, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return out


def synthesize_samples(req: SpeechRequest) -> "np.ndarray":
    """Speak one request without caching it: (T,) float32 at 16 kHz.

    Raises `AudioError` when the engine fails or produces empty or silent audio,
    `InputError` when the voice is not installed.
    """
    from xmodal_core.audio import load_audio

    check_voice(req.voice)  # engines fall back to a default voice on unknown names: refuse instead
    with tempfile.TemporaryDirectory(prefix="xmodal-tts-") as tmp:
        raw = _synthesize_raw(req, Path(tmp))
    try:
        return load_audio(raw, max_seconds=MAX_SECONDS, allow_silent=False).samples
    except AudioError as exc:
        raise AudioError(f"{req.voice.id} produced unusable audio for {req.text[:40]!r}: {exc}") from None


def synthesize(requests: Sequence[SpeechRequest], *, workers: int = WORKERS, progress: Progress | None = None,
               on_error: str = "raise") -> list[Path | None]:
    """Speak every request (cached ones are only looked up), `workers` at a time.

    Args:
        requests: from `plan_speech` or `request_for`.
        workers: parallel engine processes.
        progress: callable(done, total).
        on_error: "raise" (a failure raises `AudioError`) or "skip" (its slot is None;
            `synthesize_report` also gives the reasons).

    Returns:
        One path per request, in order.
    """
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    paths_, errors = synthesize_report(requests, workers=workers, progress=progress)
    if errors and on_error == "raise":
        i, msg = next(iter(errors.items()))
        raise AudioError(f"speech synthesis failed for request {i} ({requests[i].voice.id}): {msg}")
    return paths_


def synthesize_report(requests: Sequence[SpeechRequest], *, workers: int = WORKERS,
                      progress: Progress | None = None) -> tuple[list[Path | None], dict[int, str]]:
    """Like `synthesize` with on_error="skip", plus {request index: reason} for the failures."""
    unique: dict[str, SpeechRequest] = {}
    for r in requests:
        unique.setdefault(r.key(), r)
    results: dict[str, Path | str] = {}

    def work(req: SpeechRequest) -> Path | str:
        try:
            return synthesize_one(req)
        except (InputError, DatasetError, OSError) as exc:  # InputError covers AudioError
            return str(exc)

    items = list(unique.items())
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for n, ((key, _), result) in enumerate(zip(items, pool.map(work, [r for _, r in items])), 1):
            results[key] = result
            if progress is not None:
                progress(n, len(items))
    out: list[Path | None] = []
    errors: dict[int, str] = {}
    for i, r in enumerate(requests):
        res = results[r.key()]
        if isinstance(res, Path):
            out.append(res)
        else:
            out.append(None)
            errors[i] = res
    return out, errors


def speak_texts(texts: Sequence[str], voices: Sequence[Voice | str] | None = None, *, per_text: int = 1, seed: int = 0,
                jitter: bool = True, workers: int = WORKERS, progress: Progress | None = None) -> list[Path]:
    """Speak texts; returns WAV paths (16 kHz mono), text-major: `per_text` voices per text.

    The voices for each text are drawn from `voices` (default `default_voices()`) by a
    seeded hash, so the same call gives the same files. Use `plan_speech` + `synthesize`
    to know which voice said what.
    """
    requests = plan_speech(texts, voices, per_text=per_text, seed=seed, jitter=jitter)
    return synthesize(requests, workers=workers, progress=progress)  # type: ignore[return-value]


# --- round trip ------------------------------------------------------------------------------

@dataclass
class EngineWER:
    """Round-trip check of one engine: its speech transcribed by Whisper, scored against the text."""

    engine: str
    wer: float
    utterances: int
    worst_voice: str
    worst_voice_wer: float
    examples: list[tuple[str, str, str]]  # (voice, reference, hypothesis)


def round_trip_wer(requests: Sequence[SpeechRequest], wavs: Sequence[Path | None], *, per_engine: int = 6, seed: int = 0,
                   transcriber: str = "whisper-tiny.en") -> dict[str, EngineWER]:
    """WER of a seeded sample of `per_engine` utterances per engine, transcribed by `transcriber`.

    A high number for one engine (or one voice) means that voice is broken or unintelligible.
    """
    from xmodal_core.asr_metrics import word_error_rate
    from xmodal_core.registry import get_transcriber

    by_engine: dict[str, list[tuple[SpeechRequest, Path]]] = {}
    for req, wav in zip(requests, wavs):
        if wav is not None:
            by_engine.setdefault(req.voice.engine, []).append((req, wav))
    asr = get_transcriber(transcriber)
    out = {}
    for engine, pairs in sorted(by_engine.items()):
        sample = seeded_rng("wer-sample", seed, engine).sample(pairs, min(per_engine, len(pairs)))
        hyps = asr.transcribe([w for _, w in sample])
        refs = [r.text for r, _ in sample]
        per_voice: dict[str, list[int]] = {}
        for i, (r, _) in enumerate(sample):
            per_voice.setdefault(r.voice.id, []).append(i)
        voice_wer = {v: word_error_rate([refs[i] for i in idx], [hyps[i] for i in idx]) for v, idx in per_voice.items()}
        worst = max(voice_wer, key=voice_wer.get)
        out[engine] = EngineWER(engine, round(word_error_rate(refs, hyps), 4), len(sample), worst,
                                round(voice_wer[worst], 4),
                                [(r.voice.id, r.text, h) for (r, _), h in zip(sample, hyps)])
    return out


def engine_wer_dict(results: dict[str, EngineWER]) -> dict:
    return {k: asdict(v) for k, v in results.items()}
