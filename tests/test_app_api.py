"""The app's named HTTP endpoints, driven through gradio_client against a running `python app.py`:
only the named ones are listed, and `/search` returns what the in-process `xm.search` returns."""
from __future__ import annotations

import pytest

from tests.browser_helpers import App, install_default_model, make_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A running app with its own home (holding the default model) and a gradio_client on it."""
    from gradio_client import Client

    root = tmp_path_factory.mktemp("app-api")
    home = make_home(root)
    install_default_model(home)
    app = App(home, root / "app.log", extra_args=("--no-warmup", "--no-worker"))
    try:
        app.wait_ready(timeout=180)
        yield home, Client(app.url, verbose=False), app
    finally:
        app.stop()


@pytest.fixture()
def same_home(served, monkeypatch):
    from xmodal_core import gallery

    monkeypatch.setenv("XMODAL_HOME", str(served[0]))
    gallery.forget_loaded()
    yield served
    gallery.forget_loaded()


def test_api_page_lists_only_the_named_endpoints(served):
    _, client, _ = served
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/search", "/embed", "/zeroshot", "/runs"}
    assert not api["unnamed_endpoints"]


def test_search_endpoint_returns_the_in_process_search(same_home):
    import xmodal_core as xm
    from xmodal_core.gallery import default_gallery

    _, client, app = same_home
    out = client.predict(query="a red apple", mode="cascade", k=8, api_name="/search")
    hits = out["hits"]
    items = {it.id: it for it in default_gallery().items}
    assert len(hits) == 8 and all(h["id"] in items for h in hits), app.log_tail()
    assert all(h["caption"] == items[h["id"]].text and h["image"] == items[h["id"]].image for h in hits)
    local = xm.search("a red apple", mode="cascade", k=8)
    assert [h["id"] for h in hits] == [h.item.id for h in local.hits]
    assert [round(h["score"], 5) for h in hits] == [round(h.score, 5) for h in local.hits]
    coarse = client.predict(query="a red apple", mode="coarse", k=5, api_name="/search")
    local = xm.search("a red apple", mode="coarse", k=5)
    assert [h["id"] for h in coarse["hits"]] == [h.item.id for h in local.hits]
    assert "run" in coarse["model"]


def test_embed_and_runs_endpoints_match_the_library(same_home):
    import numpy as np

    import xmodal_core as xm
    from xmodal_core import spaces

    _, client, _ = same_home
    rows = np.array(client.predict(items=["a red apple", "seven"], api_name="/embed"), dtype=np.float32)
    np.testing.assert_allclose(rows, xm.load("xmodal-default").encode_text(["a red apple", "seven"]), atol=1e-5)
    runs = client.predict(api_name="/runs")
    default = spaces.default_space()
    assert {default.speech_run, default.image_run} <= {r["id"] for r in runs}
    with pytest.raises(Exception, match="unknown search mode"):
        client.predict(query="a cat", mode="telepathy", api_name="/search")
