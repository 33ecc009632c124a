"""The `xmodal` command: JSON outputs on real inputs, and one clear line (no traceback) on bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xmodal_core.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_lists_every_registered_tower(capsys):
    code, out, _ = run_cli(capsys, "models", "--json", "--no-load")
    names = {m["name"] for m in json.loads(out)}
    assert code == 0 and {"minilm", "whisper-tiny.en", "efficientnet-lite0"} <= names


def test_embed_text_json_equals_the_library_embedding(capsys):
    from xmodal_core.registry import get_encoder

    code, out, _ = run_cli(capsys, "embed", "--model", "minilm", "--text", "a cat", "a kitten", "--json")
    data = json.loads(out)
    vecs = np.array([item["embedding"] for item in data["items"]])
    assert code == 0 and vecs.shape == (2, 384)
    assert [item["input"] for item in data["items"]] == ["a cat", "a kitten"]
    expected = get_encoder("minilm").encode(["a cat", "a kitten"])  # in-process, same tower
    np.testing.assert_allclose(vecs, expected, atol=1e-5)  # the CLI rounds to 6 decimals


def test_embed_image_file(capsys, chelsea_png):
    code, out, _ = run_cli(capsys, "embed", "--model", "efficientnet-lite0", str(chelsea_png), "--json")
    assert code == 0 and json.loads(out)["dim"] == 1280


LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def test_transcribe_real_read_sentence(capsys):
    wav = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"
    code, out, _ = run_cli(capsys, "transcribe", str(wav), "--json")
    result = json.loads(out)[0]
    assert code == 0 and result["duration_s"] > 1
    assert len(result["text"].split()) >= 5
    from xmodal_core.audio import load_audio
    from xmodal_core.registry import get_transcriber

    audio = load_audio(wav)
    assert result["duration_s"] == pytest.approx(audio.duration, abs=1e-3)
    assert result["text"] == get_transcriber("whisper-tiny.en").transcribe([audio])[0]  # same as in-process


@pytest.mark.parametrize("args, message", [
    (("transcribe", "/nonexistent/file.wav"), "not found"),
    (("embed", "--model", "minilm", "--text", " "), "empty"),
    (("embed", "--model", "not-a-model", "--text", "x"), "unknown model"),
    (("embed", "--model", "minilm"), "either --text"),
    (("embed", "--model", "minilm", "/nonexistent/x.png"), "encodes text"),
])
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_corrupt_audio_file(capsys, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    code, _, err = run_cli(capsys, "transcribe", str(bad))
    assert code == 2 and "could not decode" in err


def test_console_script_and_module_entry_points(tmp_path):
    exe = Path(sys.executable).parent / "xmodal"
    for cmd in ([str(exe)], [sys.executable, "-m", "xmodal_core.cli"]):
        proc = subprocess.run(cmd + ["models", "--no-load", "--json"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert any(m["name"] == "minilm" for m in json.loads(proc.stdout))
    proc = subprocess.run([str(exe), "embed", "--model", "minilm", "--text", ""], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_the_library_imports_no_trainers_module_and_the_trainers_register_their_commands(capsys):
    """`xmodal_core` reaches the trainers only by module name (plugin discovery)."""
    import re

    root = Path(__file__).resolve().parents[1] / "xmodal_core"
    pattern = re.compile(r"^\s*(from|import) trainers", re.M)
    files = [*(root / "cli").rglob("*.py"), *(root / "data").rglob("*.py"), root / "evaluate.py", root / "zeroshot.py"]
    assert [str(p) for p in files if pattern.search(p.read_text(encoding="utf-8"))] == []
    from xmodal_core.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"models", "transcribe", "embed", "data", "features", "zeroshot", "search", "default-model", "train",
            "runs", "eval", "cancel", "worker"} <= commands
