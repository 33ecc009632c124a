"""The app takes only audio and image uploads: anything else is refused before Gradio stores it."""
from __future__ import annotations

import httpx
import pytest

from tests.browser_helpers import App, make_home
from pages.uploads import refused_names

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("uploads")
    server = App(make_home(root), root / "app.log", extra_args=("--no-warmup", "--no-worker"))
    try:
        server.wait_ready(240)
        yield server
    finally:
        server.stop()


def _upload(app: App, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{app.url}/gradio_api/upload", files={"files": (name, data)}, timeout=60)


def test_a_real_recording_and_a_real_photo_upload(app, fsdd_dir, chelsea_png):
    wav = sorted(fsdd_dir.glob("*.wav"))[0]
    for path in (wav, chelsea_png):
        resp = _upload(app, path.name, path.read_bytes())
        assert resp.status_code == 200, resp.text
        (stored,) = resp.json()
        assert stored.endswith(path.name)


@pytest.mark.parametrize("name", ["notes.txt", "run.sh", "model.pt", "page.html", "noextension"])
def test_other_file_types_are_refused_with_a_message_and_the_app_keeps_serving(app, name):
    resp = _upload(app, name, b"#!/bin/sh\necho not a picture\n")
    assert resp.status_code == 415
    assert name in resp.text and "not an audio or image file" in resp.text
    assert httpx.get(f"{app.url}/config", timeout=30).status_code == 200


def test_one_bad_file_among_good_ones_refuses_the_whole_upload():
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="a.wav"\r\n\r\nRIFF\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="b.exe"\r\n\r\nMZ\r\n--XyZ--\r\n')
    assert refused_names(b"multipart/form-data; boundary=XyZ", body) == ["b.exe"]
    assert refused_names(b"multipart/form-data; boundary=XyZ", body.replace(b"b.exe", b"b.PNG")) == []
