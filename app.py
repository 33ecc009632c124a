"""The xmodal workbench: one Gradio app with a page per job. `python app.py --help`.

Pages: Search, Templates, Explorer, Train, Label, Models; named HTTP endpoints `/search`,
`/embed`, `/zeroshot`, `/runs` for `gradio_client` (pages/api.py). Models load lazily; at start a
background thread prepares the default gallery and loads the text and speech models, with
its status shown at the top of every page, so the app serves within seconds.
"""
from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "agg")

import gradio as gr  # noqa: E402

from pages import api, explorer, label, models, search, templates, train  # noqa: E402
from pages._ui import status_markdown  # noqa: E402

MAX_UPLOAD = "50mb"
QUEUE_SIZE = 64
DEFAULT_CONCURRENCY = 2
CACHE_CLEANUP = (3600, 86400)  # (how often, older than), seconds
CSS = """
.xm-header {display: flex; align-items: baseline; gap: 1rem; flex-wrap: wrap;}
.xm-header h1 {margin: 0 !important;}
.xm-status {font-size: 0.9em; opacity: 0.9;}
footer {display: none !important;}
"""


def warm_up() -> None:
    """Queue the background preparation: default gallery and its caption index, then the models."""
    from xmodal_core import background

    def gallery_task(progress):
        from xmodal_core.gallery import default_gallery, text_embed_fn

        gallery = default_gallery(progress=progress)
        key, fn = text_embed_fn()
        gallery.index(key, fn, what="text", progress=progress)
        return f"{len(gallery)} images"

    def whisper_task(progress):
        from xmodal_core.registry import get_encoder

        get_encoder("whisper-tiny.en").model  # noqa: B018 - the property loads the weights
        return ""

    background.submit("default gallery + MiniLM", gallery_task)
    background.submit("Whisper tiny.en", whisper_task)


def build_app(runner=None) -> gr.Blocks:
    """All pages in tabs. `runner`: the training queue worker (`xmodal_core.runner.Runner`)."""
    if runner is None:
        from xmodal_core.runner import Runner

        runner = Runner()
    # Uploads and the files Gradio copies for the browser are deleted after a day (checked hourly).
    with gr.Blocks(title="xmodal", delete_cache=CACHE_CLEANUP) as demo:
        with gr.Row(elem_classes="xm-header"):
            gr.Markdown("# xmodal\nSpeech, images and text in one embedding space.")
        status = gr.Markdown(status_markdown, elem_classes="xm-status", elem_id="xm-status")
        shared = {"review": gr.State([])}
        with gr.Tabs():
            with gr.Tab("Search", id="search"):
                search.build(shared)
            with gr.Tab("Templates", id="templates"):
                templates.build(demo)
            with gr.Tab("Explorer", id="explorer"):
                explorer.build()
            with gr.Tab("Train", id="train"):
                train.build(runner)
            with gr.Tab("Label", id="label"):
                label.build(shared)
            with gr.Tab("Models", id="models"):
                models.build(demo)
        gr.Timer(3.0).tick(status_markdown, None, status, show_progress="hidden", queue=False)
        api.build()  # the named endpoints: /search, /embed, /zeroshot, /runs
    api.hide_other_endpoints(demo)  # everything else stays off the API page
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Serve the xmodal workbench.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("XMODAL_PORT", 7860)))
    parser.add_argument("--no-warmup", action="store_true", help="load models only when a page first needs them")
    parser.add_argument("--no-worker", action="store_true",
                        help="do not run queued training runs in this process (use `xmodal worker`)")
    parser.add_argument("--allow-dir", action="append", metavar="FOLDER",
                        help="a folder under which the Search page may index folders of images (repeatable; "
                             "default: your home and the system's shared data folders)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # Gradio wraps every event in a matplotlib backend switch; if matplotlib is first imported by
    # two threads at once (an event and a background model load), that switch fails. Import it now.
    import matplotlib

    matplotlib.get_backend()

    from xmodal_core import gallery
    from xmodal_core.paths import db_path
    from xmodal_core.runner import Runner

    gallery.set_index_roots(args.allow_dir)
    runner = Runner()
    if not args.no_worker:
        runner.start()
    if not args.no_warmup:
        warm_up()
    from starlette.middleware import Middleware

    from pages.uploads import UploadTypeFilter

    demo = build_app(runner)
    try:
        demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=True,
                    allowed_paths=[str(p) for p in gallery.media_roots()], blocked_paths=[str(db_path())],
                    css=CSS, head=explorer.HOVER_JS, theme=gr.themes.Soft(), footer_links=[],
                    app_kwargs={"middleware": [Middleware(UploadTypeFilter)]})
    finally:
        runner.stop(timeout=5)


if __name__ == "__main__":
    main()
