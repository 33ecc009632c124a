"""Train page: a form for the alignment and FaST-VGS trainers, runs launched into the background
queue (one at a time), live progress and curves, cancel, the run table, compare, "use this model"."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pages._ui import guarded
from xmodal_core import spaces
from xmodal_core import train_presets as tp

TOWER_CHOICES = ["image-text", "speech-text", "speech-image"]
LOCK_CHOICES = ["both", "text", "image", "speech", "none"]
LOSS_CHOICES = ["cwcl", "cl", "l2", "multitask"]
COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"]

_state: dict = {"runner": None}


def _runner():
    runner = _state["runner"]
    if runner is None:
        raise gr.Error("the training queue is not running in this app")
    return runner


def _store():
    return _runner().store


def dataset_choices() -> list[str]:
    """Built data sets, plus the sets the presets name (built or not)."""
    from xmodal_core.data import list_datasets

    try:
        built = [d.name for d in list_datasets()]
    except Exception:  # noqa: BLE001 - an unreadable datasets folder must not break the page
        built = []
    wanted = [p.config.get("dataset") for p in tp.presets().values() if p.config.get("dataset")]
    return list(dict.fromkeys(built + wanted))


def preset_fields(name: str):
    """Form values of a preset: description, kind, data, towers, locked, loss, batch, lr, epochs, max pairs."""
    preset = tp.presets().get(name)
    if preset is None:
        raise gr.Error(f"no preset called {name!r}")
    c = preset.config
    towers = "-".join(c.get("towers", ["speech", "image"]))
    return (f"*{preset.description}*", preset.kind, c.get("dataset", "tuxpaint"), towers, c.get("locked", "both"),
            c.get("loss", "cwcl"), c.get("batch_size", 64), c.get("lr", 1e-3), c.get("epochs", 10),
            c.get("max_train") or 0)


@guarded
def launch(preset_name: str, run_name: str, kind: str, dataset: str, towers: str, locked: str, loss: str,
           batch_size: float, lr: float, epochs: float, max_pairs: float):
    """Validate the form, queue the run; returns (message, selected run id)."""
    preset = tp.presets().get(preset_name)
    if preset is None:
        raise gr.Error("pick a preset to start from")
    if not dataset:
        raise gr.Error("pick the data to train on")
    base = dict(preset.config)
    base.pop("max_train", None)
    overrides = dict(dataset=dataset, batch_size=int(batch_size), lr=float(lr), epochs=int(epochs))
    if kind == "align":
        pair = towers.split("-")
        if "text" not in pair:
            raise gr.Error("the align trainer puts one tower into the text space: pick image-text or speech-text "
                           "(speech-image is FaST-VGS)")
        overrides.update(towers=pair, locked=locked, loss=loss,
                         no_head=["text"] if locked in ("both", "text") else [],
                         max_train=int(max_pairs) if max_pairs else None)
    config = tp.make_config(kind, base, **overrides)
    tp.check_dataset(dataset, config.get("towers") or (("speech", "image") if kind == "vgs" else ()))
    name = (run_name or "").strip() or preset_name
    run_id = _runner().submit(name, kind, config)
    queued = [r for r in _store().list_runs(status=("queued", "running")) if r.id != run_id]
    where = f"after {len(queued)} run(s) ahead of it" if queued else "now"
    return f"Queued **run {run_id}** ({name}); it starts {where}.", run_id


def queue_status() -> str:
    store = _store()
    running = store.list_runs(status="running")
    queued = store.list_runs(status="queued")
    if not running and not queued:
        return "Queue: idle."
    parts = []
    for r in running:
        total = f"/{r.total_steps}" if r.total_steps else ""
        parts.append(f"running **run {r.id}** ({r.name}) step {r.step}{total} on {r.device or '…'}")
    if queued:
        parts.append(f"{len(queued)} queued ({', '.join(str(r.id) for r in queued)})")
    return "Queue: " + " · ".join(parts)


def curves_figure(run_ids: list[int]) -> go.Figure:
    """Training loss by step and validation R-mean / zero-shot by epoch, one colour per run."""
    store = _store()
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "validation (per epoch)"))
    loss = tp.curves(store, run_ids, ("loss",))
    val = tp.curves(store, run_ids, ("val/r_mean", "val/zeroshot_top1"), x="epoch")
    for n, rid in enumerate(run_ids):
        color = COLORS[n % len(COLORS)]
        xs, ys = loss.series.get(int(rid), {}).get("loss", ([], []))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"run {rid} loss", line=dict(color=color)), 1, 1)
        for metric, dash in (("val/r_mean", "solid"), ("val/zeroshot_top1", "dot")):
            xs, ys = val.series.get(int(rid), {}).get(metric, ([], []))
            if xs:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"run {rid} {metric[4:]}",
                                         line=dict(color=color, dash=dash)), 1, 2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_layout(height=330, margin=dict(l=40, r=10, t=40, b=40), legend=dict(orientation="h", y=-0.25),
                      template="plotly_white")
    return fig


def refresh(selected, compare):
    """Timer tick: (queue status, run table, curves, run choices update)."""
    store = _store()
    store.recover_dead_runs()  # a run whose worker was killed (kill -9) shows as failed, not running
    ids = [int(x) for x in (compare or [])]
    if selected and int(selected) not in ids:
        ids = [int(selected)] + ids
    rows = tp.run_rows(store)
    choices = [str(r[0]) for r in rows]
    return queue_status(), rows, curves_figure(ids), gr.update(choices=choices)


@guarded
def cancel(run_id):
    if not run_id:
        raise gr.Error("select a run in the table first")
    run = _runner().cancel(int(run_id))
    return f"Run {run.id}: " + ("cancelled." if run.status == "cancelled" else "stopping at its next step…")


@guarded
def use_model(run_id):
    if not run_id:
        raise gr.Error("select a completed run in the table first")
    sel = spaces.use_run(int(run_id), store=_store())
    if sel.vgs == int(run_id):
        return (f"Run {int(run_id)} (FaST-VGS) is now the model in use for coarse-to-fine and fine search "
                "on the Search page.")
    return (f"Run {int(run_id)} is now the model in use (speech: {sel.speech or 'cascade'}, images: "
            f"{sel.image or 'none'}); Search, Templates and Explorer use it from now on.")


@guarded
def compare(run_ids):
    ids = [int(x) for x in (run_ids or [])]
    if not ids:
        raise gr.Error("pick runs to compare")
    headers, rows = tp.compare_rows(_store(), ids)
    return gr.update(value=rows, headers=headers), curves_figure(ids)


def select_row(evt: gr.SelectData):
    """Clicking a row of the run table selects that run."""
    row = evt.row_value if evt is not None else None
    return int(row[0]) if row else None


def build(runner) -> None:
    _state["runner"] = runner
    names = list(tp.presets())
    first = tp.ONE_MINUTE if tp.ONE_MINUTE in names else (names[0] if names else None)
    f = preset_fields(first) if first else ("", "align", "tuxpaint", "image-text", "both", "cwcl", 64, 1e-3, 10, 0)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            preset = gr.Dropdown(names, value=first, label="Preset")
            preset_md = gr.Markdown(f[0])
            run_name = gr.Textbox(label="Run name", placeholder="defaults to the preset name", elem_id="train-name")
            with gr.Row():
                kind = gr.Dropdown(tp.available_kinds() or ["align"], value=f[1], label="Trainer")
                dataset = gr.Dropdown(dataset_choices(), value=f[2], label="Data", allow_custom_value=True)
            with gr.Row():
                towers = gr.Dropdown(TOWER_CHOICES, value=f[3], label="Towers")
                locked = gr.Dropdown(LOCK_CHOICES, value=f[4], label="Locked towers")
                loss = gr.Dropdown(LOSS_CHOICES, value=f[5], label="Loss", elem_id="train-loss")
            with gr.Row():
                batch = gr.Number(f[6], label="Batch size", precision=0, minimum=1)
                lr = gr.Number(f[7], label="Learning rate", minimum=0)
            with gr.Row():
                epochs = gr.Number(f[8], label="Epochs", precision=0, minimum=1)
                max_pairs = gr.Number(f[9], label="Max training pairs (0 = all)", precision=0, minimum=0)
            go_btn = gr.Button("Launch run", variant="primary", elem_id="train-launch")
            launch_md = gr.Markdown(elem_id="train-launch-msg")
        with gr.Column(scale=3, min_width=420):
            status = gr.Markdown(queue_status, elem_id="train-status")
            plot = gr.Plot(label="Curves", elem_id="train-plot")
            with gr.Row():
                selected = gr.Number(label="Selected run", precision=0, scale=1, elem_id="train-selected")
                cancel_btn = gr.Button("Cancel run", variant="stop", scale=1)
                use_btn = gr.Button("Use this model", variant="secondary", scale=1, elem_id="train-use")
            action_md = gr.Markdown(elem_id="train-action")
            table = gr.Dataframe(value=lambda: tp.run_rows(runner.store), headers=tp.RUN_HEADERS, label="Runs",
                                 interactive=False, wrap=True, max_height=320, elem_id="train-table")
            with gr.Accordion("Compare runs", open=False):
                compare_dd = gr.Dropdown([], multiselect=True, label="Runs to compare")
                compare_btn = gr.Button("Compare")
                compare_table = gr.Dataframe(label="Evaluation side by side", interactive=False, wrap=True)
                compare_plot = gr.Plot(label="Curves of the compared runs")
    timer = gr.Timer(2.0)

    preset.change(preset_fields, preset, [preset_md, kind, dataset, towers, locked, loss, batch, lr, epochs,
                                          max_pairs], queue=False)
    go_btn.click(launch, [preset, run_name, kind, dataset, towers, locked, loss, batch, lr, epochs, max_pairs],
                 [launch_md, selected])
    timer.tick(refresh, [selected, compare_dd], [status, table, plot, compare_dd], show_progress="hidden",
               queue=False)
    cancel_btn.click(cancel, selected, action_md)
    use_btn.click(use_model, selected, action_md)
    table.select(select_row, None, selected, queue=False)
    compare_btn.click(compare, compare_dd, [compare_table, compare_plot])
