"""Templates page: edit a template list, pick a labelled set and models, and see zero-shot accuracy
for the first k templates (k = 1 .. n), one line per model, CL vs CWCL side by side. Lists are saved in SQLite."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pages._ui import HEAVY, HEAVY_LIMIT, guarded, progress_fn
from xmodal_core import analysis
from xmodal_core.errors import InputError

SAVED = "saved: "
COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"]
PANEL_ORDER = ["cl", "cwcl", "l2", "multitask", "untrained", "in use"]
PANEL_TITLES = {"cl": "CL", "cwcl": "CWCL", "l2": "L2 teacher-student", "multitask": "multitask",
                "untrained": "untrained baseline", "in use": "model in use"}


def _store():
    from xmodal_core.spaces import shared_store

    return shared_store()


def available_templates() -> list[str]:
    from xmodal_core.zeroshot import available_templates as shipped  # zeroshot imports torch: not at app start

    return shipped()


def load_templates(name: str) -> list[str]:
    from xmodal_core.zeroshot import load_templates as load

    return load(name)


def parse_templates(text):
    from xmodal_core.zeroshot import parse_templates as parse

    return parse(text)


def list_choices() -> list[str]:
    """Shipped lists by name, then saved ones ("saved: NAME")."""
    try:
        saved = [SAVED + t.name for t in _store().template_lists()]
    except Exception:  # noqa: BLE001 - a busy store must not break the page
        saved = []
    return available_templates() + saved


@guarded
def load_list(choice: str) -> str:
    if not choice:
        raise gr.Error("pick a list to start from")
    if choice.startswith(SAVED):
        return _store().get_templates(choice[len(SAVED):]).text
    return "\n".join(load_templates(choice))


def check(text: str) -> str:
    """Live check of the text box: '' when fine, else the problems by line."""
    if not (text or "").strip():
        return "⚠ no templates yet: one per line, `{}` where the class name goes."
    try:
        n = len(parse_templates(text))
    except InputError as exc:
        return f"⚠ {exc}"
    return f"✓ {n} templates."


@guarded
def save_list(name: str, text: str):
    name = (name or "").strip()
    if not name:
        raise gr.Error("type a name for the list")
    parse_templates(text)
    _store().save_templates(name, text)
    return f"Saved **{name}**.", gr.update(choices=list_choices(), value=SAVED + name)


def model_choices(set_name: str) -> list[tuple[str, str]]:
    spec = analysis.get_set(set_name)
    return [(t, k) for t, k in analysis.model_choices([spec.zero_shot, "text"]) if k != "pretrained"]


def default_models(choices: list[tuple[str, str]]) -> list[str]:
    """Every trained run (up to four) plus the untrained baseline; else the first choice."""
    runs = [key for _, key in choices if key.startswith("run:")][:4]
    baseline = [key for _, key in choices if key == "cascade"]
    return (runs + baseline) or [key for _, key in choices[:1]]


def on_set(set_name: str):
    choices = model_choices(set_name)
    return gr.update(choices=choices, value=default_models(choices))


def curves_figure(curves: list[analysis.ZeroShotCurve], set_title: str) -> go.Figure:
    """One panel per loss (CL and CWCL always side by side once any run is picked); untrained
    baselines are drawn dashed grey in every panel."""
    baselines = [c for c in curves if c.loss in ("untrained", "in use")]
    trained = {c.loss for c in curves} - {"untrained", "in use"}
    rank = {p: i for i, p in enumerate(PANEL_ORDER)}
    columns = sorted(trained | {"cl", "cwcl"}, key=lambda p: rank.get(p, 99)) if trained else ["untrained"]
    fig = make_subplots(rows=1, cols=len(columns), shared_yaxes=True,
                        subplot_titles=[PANEL_TITLES.get(p, p) for p in columns])
    color = {c.model: COLORS[n % len(COLORS)] for n, c in enumerate(c for c in curves if c not in baselines)}
    for col, panel in enumerate(columns, start=1):
        runs = [c for c in curves if c.loss == panel and c not in baselines]
        for c in runs:
            fig.add_trace(go.Scatter(x=c.ks, y=c.top1, mode="lines+markers", name=c.title, legendgroup=c.model,
                                     line=dict(color=color[c.model])), 1, col)
        for c in baselines:
            fig.add_trace(go.Scatter(x=c.ks, y=c.top1, mode="lines+markers", name=c.title, legendgroup=c.model,
                                     showlegend=col == 1, line=dict(color="#6b7280", dash="dash")), 1, col)
        if not runs and panel != "untrained":
            fig.add_annotation(text=f"no {PANEL_TITLES.get(panel, panel)} run picked", showarrow=False,
                               xref=f"x{col if col > 1 else ''} domain", yref="y domain", x=0.5, y=0.9)
        fig.update_xaxes(title_text="first k templates", row=1, col=col, dtick=1 if len(curves[0].ks) <= 12 else None)
    fig.update_yaxes(title_text="zero-shot top-1", row=1, col=1, range=[0, 1.02])
    fig.update_layout(title=f"Zero-shot accuracy vs number of templates — {set_title}", height=430,
                      template="plotly_white", margin=dict(l=50, r=10, t=70, b=40),
                      legend=dict(orientation="h", y=-0.2))
    return fig


@guarded
def evaluate(text: str, set_name: str, models: list, per_class: int, progress=gr.Progress()):
    templates = parse_templates(text)
    curves = analysis.zero_shot_curves(set_name, models or [], templates, per_class=int(per_class),
                                       progress=progress_fn(progress, "embedding"))
    rows = [[c.title] + [round(v, 3) for v in c.top1] for c in curves]
    headers = ["model"] + [f"k={k}" for k in curves[0].ks]
    fig = curves_figure(curves, analysis.get_set(set_name).title)
    return fig, gr.update(value=rows, headers=headers)


def build(demo: gr.Blocks) -> None:
    first_set = "fsdd"
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            with gr.Row():
                start = gr.Dropdown(["simple", "general"], value="simple", label="Start from", scale=3)
                load_btn = gr.Button("Load", scale=1, elem_id="templates-load")
            text = gr.Textbox(lines=12, max_lines=30,
                              label="Templates (one per line, {} where the class goes)",
                              elem_id="templates-text")
            problems = gr.Markdown(elem_id="templates-problems")
            with gr.Row():
                name = gr.Textbox(label="Save as", placeholder="my-templates", scale=3)
                save_btn = gr.Button("Save list", scale=1)
            save_md = gr.Markdown()
        with gr.Column(scale=3, min_width=420):
            with gr.Row():
                set_dd = gr.Dropdown([(s.title, s.name) for s in analysis.zero_shot_sets()], value=first_set,
                                     label="Labelled set", elem_id="templates-set")
                choices = model_choices(first_set)
                models = gr.Dropdown(choices, value=default_models(choices), multiselect=True,
                                     label="Models", elem_id="templates-models")
            per_class = gr.Slider(1, 100, value=10, step=1, label="Items per class", elem_id="templates-per-class")
            go_btn = gr.Button("Evaluate", variant="primary", elem_id="templates-go")
            plot = gr.Plot(label="Zero-shot accuracy", elem_id="templates-plot")
            table = gr.Dataframe(label="Top-1 by number of templates", headers=["model"], interactive=False, wrap=True,
                                 elem_id="templates-table")

    load_btn.click(load_list, start, text, queue=False)
    demo.load(lambda: ("\n".join(load_templates("simple")), gr.update(choices=list_choices())), None,
              [text, start])
    text.change(check, text, problems, queue=False, show_progress="hidden")
    save_btn.click(save_list, [name, text], [save_md, start])
    set_dd.change(on_set, set_dd, models, queue=False)
    models.focus(lambda s: gr.update(choices=model_choices(s)), set_dd, models, queue=False)
    start.focus(lambda: gr.update(choices=list_choices()), None, start, queue=False)
    go_btn.click(evaluate, [text, set_dd, models, per_class], [plot, table], concurrency_id=HEAVY,
                 concurrency_limit=HEAVY_LIMIT)
