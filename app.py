"""The xmodal workbench: one Gradio app with a page per job. `python app.py --help`."""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

from pages import models  # noqa: E402

MAX_UPLOAD = "50mb"


def build_app() -> gr.Blocks:
    """All pages in tabs. Heavy models load lazily, so building the app takes seconds."""
    with gr.Blocks(title="xmodal") as demo:
        gr.Markdown("# xmodal\nSpeech, images and text in one embedding space.")
        with gr.Tabs():
            with gr.Tab("Models"):
                models.build()
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Serve the xmodal workbench.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("XMODAL_PORT", 7860)))
    args = parser.parse_args(argv)
    build_app().launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=True)


if __name__ == "__main__":
    main()
