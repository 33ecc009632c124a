"""The public API (`import xmodal_core as xm`): the README example runs against the trained default
model, and load / encode_* / search / zeroshot agree with the library pieces they wrap."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from tests.browser_helpers import REPO, install_default_model, make_home

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def default_home(tmp_path_factory):
    """A fresh home holding a copy of the trained default model (trained once in the test cache)."""
    home = make_home(tmp_path_factory.mktemp("api"))
    install_default_model(home)
    return home


@pytest.fixture()
def in_default_home(default_home, monkeypatch):
    from xmodal_core import gallery

    monkeypatch.setenv("XMODAL_HOME", str(default_home))
    gallery.forget_loaded()  # galleries are held by name; this home's are its own
    yield default_home
    gallery.forget_loaded()


def readme_example() -> str:
    """The first python block of the README's "Python API" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_is_cheap_and_names_the_public_functions():
    code = "import sys, xmodal_core as xm; print('torch' in sys.modules, 'numpy' in sys.modules, callable(xm.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


@pytest.mark.slow
def test_readme_example_runs_against_the_default_model(in_default_home, fsdd_dir):
    from xmodal_core.gallery import default_gallery

    clip = fsdd_dir / "3_jackson_0.wav"
    code, n = re.subn(r'^clip = ".*?"', f"clip = {str(clip)!r}", readme_example(), count=1, flags=re.M)
    assert n == 1, "the README example names its recording in a `clip = ...` line"
    ns: dict = {}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md (Python API)", "exec"), ns)  # noqa: S102 - the documented example itself
    text, speech, image = ns["text"], ns["speech"], ns["image"]
    assert text.shape == (10, 384) and speech.shape == (1, 384) and image.shape == (1, 384)
    for emb in (text, speech, image):
        assert emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    scores = (speech @ text.T)[0]
    assert DIGITS[int(np.argmax(scores))] == "three", dict(zip(DIGITS, scores.round(3)))
    assert "heard: three" in out.getvalue() and "zero-shot: three" in out.getvalue()
    ids = {it.id for it in default_gallery().items}
    hits = ns["result"].hits
    assert len(hits) == 5 and all(h.item.id in ids for h in hits)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5] and hits[0].score >= hits[-1].score


@pytest.mark.slow
def test_encoders_match_the_library_they_wrap(in_default_home, fsdd_dir):
    import xmodal_core as xm
    from xmodal_core import spaces
    from xmodal_core.audio import load_audio
    from xmodal_core.registry import get_encoder

    model = xm.load("xmodal-default")
    # The shared text space is MiniLM's own: the API's text vectors are MiniLM's.
    np.testing.assert_allclose(model.encode_text(DIGITS), get_encoder("minilm").encode(DIGITS), atol=1e-5)
    clip = fsdd_dir / "7_george_1.wav"
    from_path = model.encode_speech([clip])
    from_array = model.encode_speech([load_audio(clip).samples], sample_rate=16000)
    assert float((from_path * from_array).sum()) > 0.99
    space = spaces.default_space()
    by_id = xm.load(space.speech_run)
    by_folder = xm.load(str(spaces.run_folder(space.speech_run)))
    np.testing.assert_allclose(by_id.encode_speech([clip]), from_path, atol=1e-5)
    np.testing.assert_allclose(by_folder.encode_speech([clip]), from_path, atol=1e-5)
    tower = xm.load("minilm")
    assert tower.modalities == ("text",)
    with pytest.raises(xm.api.InputError, match="embeds text, not speech"):
        tower.encode_speech([clip])


@pytest.mark.slow
def test_zeroshot_classifies_spoken_digits_by_their_words(in_default_home, fsdd_dir):
    import xmodal_core as xm

    clips = [fsdd_dir / f"{d}_lucas_2.wav" for d in range(10)]
    guess = xm.zeroshot(clips, DIGITS)
    assert guess.scores.shape == (10, 10)
    assert sum(p == w for p, w in zip(guess.predicted, DIGITS)) >= 8, guess.predicted


def test_load_says_what_to_do_when_nothing_matches(xmodal_home):
    import xmodal_core as xm
    from xmodal_core.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="no trained default model"):
        xm.load("xmodal-default")
    with pytest.raises(ModelNotFoundError, match="no model called 'no-such-thing'"):
        xm.load("no-such-thing")
    assert not Path("no-such-thing").exists()
