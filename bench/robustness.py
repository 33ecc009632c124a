"""Robustness: bad inputs against a running app and the CLI; searches while a run trains.

    python -m bench.robustness            # every case, then 20 text + 10 speech searches, idle and while training
    python -m bench.robustness --quick    # every case, 6 + 3 searches

Starts `python app.py` in its own home (caches linked, as the browser tests do), sends each
bad input through the app's HTTP API (gradio_client) or the `xmodal` command, and counts:
server deaths (the process exited or /config stopped answering), unexpected errors (a
message saying "unexpected", a traceback from the CLI, a client-side failure that is not the
app's message), and data lost (the built `tuxpaint` manifest or the run store changed where a
case should have been refused). Every count must be 0. Writes bench/results/robustness.json.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ["XMODAL_UI_ENDPOINTS"] = "1"  # the page handlers stay callable (unlisted) for this driver
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import write_result  # noqa: E402

SEARCH = "/run_search_ui"
# The query kind is session state, set by selecting a query tab (these unnamed tab handlers).
KIND_SETTERS = {"speech-mic": "/lambda", "speech-file": "/lambda_1", "image": "/lambda_2", "text": "/lambda_3"}


def make_media(folder: Path) -> dict[str, Path]:
    """The bad (and a few good) files the cases upload."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    t = np.arange(16000) / 16000
    f["tone"] = folder / "tone.wav"
    sf.write(f["tone"], (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    f["silent"] = folder / "silent.wav"
    sf.write(f["silent"], np.zeros(16000, dtype=np.float32), 16000)
    f["long"] = folder / "long.wav"
    sf.write(f["long"], (0.1 * np.random.default_rng(0).standard_normal(16000 * 200)).astype(np.float32), 16000)
    f["empty_wav"] = folder / "empty.wav"
    f["empty_wav"].write_bytes(b"")
    f["text_wav"] = folder / "notes.wav"
    f["text_wav"].write_text("this is not audio\n" * 50)
    f["junk_ogg"] = folder / "junk.ogg"
    f["junk_ogg"].write_bytes(os.urandom(4096))
    f["truncated_wav"] = folder / "cut.wav"
    f["truncated_wav"].write_bytes(f["tone"].read_bytes()[:60])
    for name, size in (("wide", (100_000, 1)), ("wide5k", (5000, 1)), ("tall", (1, 30_000))):
        f[name] = folder / f"{name}.png"
        Image.new("RGB", size).save(f[name])
    f["photo"] = folder / "photo.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(f["photo"])
    f["truncated_png"] = folder / "cut.png"
    f["truncated_png"].write_bytes(f["photo"].read_bytes()[:80])
    f["text_png"] = folder / "readme.png"
    f["text_png"].write_text("not a picture")
    f["empty_png"] = folder / "empty.png"
    f["empty_png"].write_bytes(b"")
    bad_dir = folder / "bad-folder"
    bad_dir.mkdir(exist_ok=True)
    Image.new("RGB", (100_000, 1)).save(bad_dir / "wide.png")
    Image.new("RGB", (32, 32), (0, 0, 200)).save(bad_dir / "blue.png")
    f["bad_folder"] = bad_dir
    f["binary"] = folder / "blob.json"
    f["binary"].write_bytes(bytes(range(256)) * 64)
    return f


def search_args(kind="text", audio=None, image=None, text="", gallery="default", mode="cascade", target="images"):
    from gradio_client import handle_file

    wrap = (lambda p: handle_file(str(p)) if p is not None else None)
    return [kind, None, wrap(audio), wrap(image), text, gallery, mode, 6, 100, 90, 8.0, target]


def _has_surrogate(args: list) -> bool:
    return any(isinstance(a, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in a) for a in args)


def raw_call(url: str, endpoint: str, args: list, session: str) -> None:
    """POST through Gradio's HTTP API with JSON escapes, as a browser sends text that
    gradio_client cannot encode (lone surrogates); raises RuntimeError with the app's message."""
    import json
    import uuid

    def call(name: str, data: list) -> None:
        body = json.dumps({"data": data, "session_hash": session}).encode("ascii")  # \udc80 escapes
        req = urllib.request.Request(f"{url}/gradio_api/call{name}", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            event = json.loads(resp.read())["event_id"]
        with urllib.request.urlopen(f"{url}/gradio_api/call{name}/{event}", timeout=600) as resp:
            stream = resp.read().decode("utf-8", "replace")
        if "event: error" in stream:
            raise RuntimeError(stream.split("data:", 2)[-1].strip() or "error without a message")

    session = session or uuid.uuid4().hex
    if endpoint == SEARCH:
        call(KIND_SETTERS[args[0]], [])
        args = args[1:]
    call(endpoint, args)


def predict(client, endpoint: str, args: list):
    """One call; a search first selects its query tab (the kind), as a person would."""
    if endpoint == SEARCH:
        client.predict(api_name=KIND_SETTERS[args[0]])
        args = args[1:]
    return client.predict(*args, api_name=endpoint)


def cases(media: dict[str, Path]) -> list[tuple[str, str, str, Callable[[], list]]]:
    """(area, name, endpoint or "cli", args builder). Args are built lazily (handle_file)."""
    long = "x" * 10_000
    launch = lambda **kw: ["1-minute demo", "", "align", kw.get("dataset", "tuxpaint"), "image-text", "text",  # noqa: E731
                           "cwcl", kw.get("batch", 8), kw.get("lr", 1e-3), kw.get("epochs", 1), kw.get("pairs", 0)]
    many = "\n".join(f"photo {i} of a {{}}" for i in range(10_000))
    audio = {"silent": "silent", "200 s clip": "long", "empty file": "empty_wav", "text as .wav": "text_wav",
             "random bytes .ogg": "junk_ogg", "truncated wav": "truncated_wav"}
    images = {"100000x1 png": "wide", "5000x1 png": "wide5k", "1x30000 png": "tall", "truncated png": "truncated_png",
              "text as .png": "text_png", "empty png": "empty_png"}
    out = [("audio", name, SEARCH, lambda k=key: search_args("speech-file", audio=media[k])) for name, key in audio.items()]
    out += [("image", name, SEARCH, lambda k=key: search_args("image", image=media[k])) for name, key in images.items()]
    out += [
        ("text", "lone surrogate", SEARCH, lambda: search_args(text="a \udc80 frog")),
        ("text", "NUL byte", SEARCH, lambda: search_args(text="frog\x00")),
        ("text", "10000 characters", SEARCH, lambda: search_args(text=long)),
        ("text", "empty", SEARCH, lambda: search_args(text="   ")),
        ("text", "gallery /etc/passwd", SEARCH, lambda: search_args(text="a frog", gallery="/etc/passwd")),
        ("text", "recordings, fine mode", SEARCH, lambda: search_args(text="a frog", mode="fine", target="recordings")),
        ("folders", "/", "/index_folder", lambda: ["/"]),
        ("folders", "/proc/self", "/index_folder", lambda: ["/proc/self"]),
        ("folders", "/etc", "/index_folder", lambda: ["/etc"]),
        ("folders", "/dev", "/index_folder", lambda: ["/dev"]),
        ("folders", "the repository", "/index_folder", lambda: [str(REPO)]),
        ("folders", "400-char name", "/index_folder", lambda: ["/tmp/" + "x" * 400]),
        ("folders", "NUL in path", "/index_folder", lambda: ["/tmp/a\x00b"]),
        ("folders", "surrogate in path", "/index_folder", lambda: ["/tmp/\udcff"]),
        ("folders", "folder with a 100000x1 png", "/index_folder", lambda: [str(media["bad_folder"])]),
        ("labels", "export as tuxpaint", "/export", lambda: ["tuxpaint"]),
        ("labels", "SQL as name", "/export", lambda: ["'; DROP TABLE runs;--"]),
        ("labels", "300-char name", "/export", lambda: ["x" * 300]),
        ("labels", "path as name", "/export", lambda: ["../../etc"]),
        ("templates", "10000 templates", "/evaluate", lambda: [many, "fsdd", ["in-use"], 4]),
        ("templates", "surrogate line", "/evaluate", lambda: ["a \udcff {}", "fsdd", ["in-use"], 4]),
        ("templates", "10000-char list name", "/save_list", lambda: [long, "a {}"]),
        ("templates", "NUL in template", "/save_list", lambda: ["nul", "a {}\x00"]),
        ("configs", "data /etc/shadow", "/launch", lambda: launch(dataset="/etc/shadow")),
        ("configs", "data /proc/self/environ", "/launch", lambda: launch(dataset="/proc/self/environ")),
        ("configs", "lr 1e308", "/launch", lambda: launch(lr=1e308)),
        ("configs", "epochs 1e9", "/launch", lambda: launch(epochs=1e9)),
        ("configs", "max pairs -5", "/launch", lambda: launch(pairs=-5)),
        ("cli", "train binary config", "cli", lambda: ["train", "--config", str(media["binary"])]),
        ("cli", "train --set lr=1e308", "cli",
         lambda: ["train", "--config", "trainers/configs/image_text_cwcl.json", "--set", "lr=1e308", "--queue"]),
        ("cli", "search --gallery /etc/passwd", "cli", lambda: ["search", "--query-text", "frog", "--gallery", "/etc/passwd"]),
        ("cli", "embed 100000x1 png", "cli", lambda: ["embed", "--model", "efficientnet-lite0", str(media["wide"])]),
        ("cli", "transcribe --max-seconds -1", "cli", lambda: ["transcribe", "--max-seconds", "-1", str(media["tone"])]),
        ("cli", "export-labels tuxpaint", "cli", lambda: ["data", "export-labels", "tuxpaint"]),
    ]
    return out


def alive(app) -> bool:
    if app.proc.poll() is not None:
        return False
    try:
        with urllib.request.urlopen(app.url + "/config", timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def fingerprint(home: Path) -> dict[str, Any]:
    """What a refused case must leave alone: the built tuxpaint manifest and the run count."""
    from xmodal_core.store import Store

    manifest = home / "datasets" / "tuxpaint" / "manifest.jsonl"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    return {"tuxpaint": digest, "runs": len(Store(home / "xmodal.db", recover=False).list_runs())}


def run_case(client, app, endpoint: str, args: list) -> tuple[str, str]:
    """(outcome, message): message (the app's own), unexpected, or death."""
    if endpoint == "cli":
        env = dict(os.environ, XMODAL_HOME=str(app.home), PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-m", "xmodal_core.cli", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        text = (done.stderr or done.stdout).strip().splitlines()
        last = text[-1] if text else ""
        bad = "Traceback" in done.stderr or "unexpected" in done.stderr.lower() or done.returncode < 0
        return ("unexpected" if bad else "message"), last[:200]
    try:
        if _has_surrogate(args):
            raw_call(app.url, endpoint, args, "")
        else:
            predict(client, endpoint, args)
        return "accepted", ""
    except Exception as exc:  # noqa: BLE001 - the outcome is what we count
        text = str(exc)
        if not alive(app):
            return "death", text[:200]
        expected = type(exc).__name__ in ("AppError", "RuntimeError") and "unexpected" not in text.lower()
        return ("message" if expected else "unexpected"), text[:200]


def timed_searches(url: str, n_text: int, n_speech: int, media: dict[str, Path]) -> dict[str, Any]:
    """n_text + n_speech searches at once; latency per search and errors."""
    from gradio_client import Client

    words = ["a red apple", "a dog", "a frog", "a car", "a house", "a tree", "a cat", "a fish", "a star", "a boat"]
    jobs = [search_args(text=words[i % len(words)]) for i in range(n_text)] + \
        [search_args("speech-file", audio=media["tone"]) for _ in range(n_speech)]
    times, errors = [], []
    lock = threading.Lock()

    def one(args):
        client = Client(url, verbose=False)
        start = time.perf_counter()
        try:
            predict(client, SEARCH, args)
        except Exception as exc:  # noqa: BLE001
            # a tone is not speech: its transcript may be empty, which the app says in a message
            if "unexpected" in str(exc).lower() or type(exc).__name__ != "AppError":
                with lock:
                    errors.append(str(exc)[:200])
        with lock:
            times.append(time.perf_counter() - start)

    threads = [threading.Thread(target=one, args=(a,)) for a in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return {"n": len(times), "errors": len(errors), "error_messages": errors[:5],
            "median_s": round(statistics.median(times), 3), "p95_s": round(p95, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 text + 3 speech searches instead of 20 + 10")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from browser_helpers import App, install_default_model, make_home
    from gradio_client import Client

    root = Path(tempfile.mkdtemp(prefix="xmodal-robustness-"))
    os.environ.setdefault("XMODAL_ALLOW_DIRS", os.pathsep.join([tempfile.gettempdir(), "~", "/usr/share"]))
    home = make_home(root)
    install_default_model(home)
    media = make_media(root / "media")
    app = App(home, root / "app.log")
    try:
        app.wait_ready(240)
        client = Client(app.url, verbose=False)
        predict(client, SEARCH, search_args(text="a frog"))  # models loaded, gallery indexed
        rows, counts = [], {"deaths": 0, "unexpected": 0, "data_lost": 0, "message": 0, "accepted": 0}
        for area, name, endpoint, build in cases(media):
            before = fingerprint(home)
            outcome, message = run_case(client, app, endpoint, build())
            after = fingerprint(home)
            lost = after["tuxpaint"] != before["tuxpaint"] or after["runs"] != before["runs"]
            counts["deaths" if outcome == "death" else outcome] += 1
            counts["data_lost"] += int(lost)
            rows.append({"area": area, "case": name, "outcome": outcome, "data_lost": lost, "message": message})
            print(f"{area:9s} {name:32s} {outcome:10s} {'LOST ' if lost else ''}{message[:90]}", flush=True)
            if outcome == "death":
                app.stop()
                app = App(home, root / "app.log")
                app.wait_ready(240)
                client = Client(app.url, verbose=False)
        n_text, n_speech = (6, 3) if args.quick else (20, 10)
        idle = timed_searches(app.url, n_text, n_speech, media)
        client.predict("1-minute demo", "robustness", "align", "tuxpaint", "image-text", "text", "cwcl", 32, 1e-3, 3, 0,
                       api_name="/launch")
        time.sleep(5)
        training = timed_searches(app.url, n_text, n_speech, media)
        result = {"cases": len(rows), "counts": counts, "serving_after": alive(app), "rows": rows,
                  "searches": {"text": n_text, "speech": n_speech, "idle": idle, "while_training": training}}
        print(f"{len(rows)} cases: {counts}; idle p95 {idle['p95_s']} s, while training p95 {training['p95_s']} s "
              f"({training['errors']} errors)")
        write_result("robustness_quick" if args.quick else "robustness", result)
    finally:
        app.stop()
    bad = counts["deaths"] + counts["unexpected"] + counts["data_lost"] + idle["errors"] + training["errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
