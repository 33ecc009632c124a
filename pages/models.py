"""Models page: which towers are registered, where their weights come from, whether they load here."""
from __future__ import annotations

import gradio as gr

HEADERS = ["name", "modality", "dim", "loads offline", "source", "detail"]


def model_table(load: bool) -> list[list]:
    """Rows for the status table; `load` actually loads each model (seconds, once per process)."""
    from xmodal_core.registry import list_models  # imports torch: not at app start

    return [[s.name, s.modality, s.dim, ("yes" if s.available else "no") if load else "not checked yet",
             s.source, s.detail] for s in list_models(load=load)]


def build(demo: gr.Blocks) -> None:
    gr.Markdown("Registered towers and their offline sources. Loading checks that the weights really load here.")
    table = gr.Dataframe(headers=HEADERS, label="Model registry", interactive=False, wrap=True,
                         elem_id="models-table")
    check = gr.Button("Load and check all models", variant="primary")
    check.click(lambda: model_table(load=True), outputs=table, concurrency_limit=1)
    demo.load(lambda: model_table(load=False), None, table)
