"""Explorer page: t-SNE / UMAP / PCA maps of a labelled set under a chosen model, class-grouped
cosine heatmaps, and retrieval probes (direct cosine vs ASIF, modality gap) before and after alignment."""
from __future__ import annotations

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from pages._ui import HEAVY, HEAVY_LIMIT, guarded, progress_fn
from xmodal_core import analysis

METHOD_CHOICES = [("t-SNE", "tsne"), ("UMAP", "umap"), ("PCA", "pca")]
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#a16207",
           "#475569", "#db2777", "#0d9488", "#7c3aed", "#65a30d", "#c2410c", "#1d4ed8"]
PROBE_HEADERS = ["model", "direct cosine top-1", "ASIF top-1", "modality gap", "pairs", "anchors", "queries", "k",
                 "p", "chance"]


def set_choices() -> list[tuple[str, str]]:
    return [(s.title, s.name) for s in analysis.SETS.values()]


def map_figure(data: analysis.MapData, color_by: str, title: str) -> go.Figure:
    """Scatter: speech as dots, text as crosses, images as squares; colour by modality or class.
    `customdata` holds a thumbnail data URI per point (shown on hover by the page's script)."""
    fig = go.Figure()
    groups = data.modality if color_by == "modality" else data.cls
    order = list(dict.fromkeys(groups))
    for n, g in enumerate(order):
        idx = [i for i, v in enumerate(groups) if v == g]
        fig.add_trace(go.Scatter(
            x=data.coords[idx, 0].tolist(), y=data.coords[idx, 1].tolist(), mode="markers", name=str(g),
            marker=dict(symbol=[analysis.MARKERS[data.modality[i]] for i in idx], size=9,
                        color=PALETTE[n % len(PALETTE)], line=dict(width=0.5, color="white"), opacity=0.85),
            text=[data.hover[i] for i in idx], customdata=[data.thumbs[i] for i in idx],
            hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title=title, height=560, template="plotly_white", margin=dict(l=20, r=20, t=50, b=20),
                      legend=dict(itemsizing="constant"), xaxis=dict(showticklabels=False, zeroline=False),
                      yaxis=dict(showticklabels=False, zeroline=False, scaleanchor="x"))
    return fig


def heatmap_figure(hm, row_mod: str, col_mod: str, title: str) -> go.Figure:
    def ticks(labels):
        vals, text = [], []
        start = 0
        for i in range(1, len(labels) + 1):
            if i == len(labels) or labels[i] != labels[start]:
                vals.append((start + i - 1) / 2)
                text.append(str(labels[start]))
                start = i
        return vals, text

    xv, xt = ticks(hm.col_labels)
    yv, yt = ticks(hm.row_labels)
    fig = go.Figure(go.Heatmap(z=np.round(hm.matrix, 4).tolist(), colorscale="Viridis", colorbar=dict(title="cosine"),
                               hovertemplate=f"{row_mod} #%{{y}} vs {col_mod} #%{{x}}: %{{z:.3f}}<extra></extra>"))
    fig.update_layout(title=title, height=520, template="plotly_white", margin=dict(l=90, r=20, t=50, b=90),
                      xaxis=dict(tickvals=xv, ticktext=xt, title=col_mod, tickangle=-45),
                      yaxis=dict(tickvals=yv, ticktext=yt, title=row_mod, autorange="reversed"))
    return fig


@guarded
def draw_map(set_name: str, model: str, modalities: list, method: str, color_by: str, per_class: int,
             progress=gr.Progress()):
    data = analysis.embedding_map(set_name, model, modalities, method, per_class=int(per_class),
                                  progress=progress_fn(progress, "projecting"))
    label = {v: t for t, v in METHOD_CHOICES}[method]
    title = f"{label} of {analysis.get_set(set_name).title} — {analysis.model_title(model)}"
    how = "from the cache" if data.cached else f"computed in {data.seconds:.1f} s (cached now)"
    notes = "".join(f"  \n*{n}*" for n in data.notes)
    return map_figure(data, color_by, title), f"{len(data.cls)} points; {how}. Hover a point for its text.{notes}"


@guarded
def draw_heatmap(set_name: str, model: str, row_mod: str, col_mod: str, classes: list, per_class: int):
    # No classes picked (e.g. the set was built after the page loaded): take its first four.
    classes = classes or analysis.classes_of(set_name)[:4]
    hm = analysis.heatmap(set_name, model, row_mod, col_mod, classes, per_class=int(per_class))
    diag = _block_contrast(hm)
    title = f"{row_mod} vs {col_mod} cosine — {analysis.model_title(model)}"
    return heatmap_figure(hm, row_mod, col_mod, title), diag


def _block_contrast(hm) -> str:
    """Mean cosine inside class blocks vs outside: how much the classes stand out."""
    rows = np.array([str(x) for x in hm.row_labels])[:, None]
    cols = np.array([str(x) for x in hm.col_labels])[None, :]
    same = rows == cols
    if not same.any() or same.all():
        return ""
    return (f"Mean cosine within a class **{hm.matrix[same].mean():.3f}**, across classes "
            f"**{hm.matrix[~same].mean():.3f}**.")


@guarded
def run_probe(set_name: str, model: str, a_mod: str, b_mod: str, anchors: int, k: int, p: float, trials: int):
    rows = []
    for key in dict.fromkeys(["pretrained", model]):
        r = analysis.probe(set_name, key, a_mod, b_mod, n_anchors=int(anchors), k=int(k), p=float(p),
                           trials=int(trials))
        rows.append([("before alignment: " if key == "pretrained" else "after: ") + r.model, r.direct, r.asif, r.gap,
                     r.pairs, r.anchors, r.queries, r.k, r.p, round(r.chance, 3)])
    return rows


def _classes(set_name: str) -> list[str]:
    from xmodal_core.data import manifest_path

    if not manifest_path(analysis.get_set(set_name).manifest).is_file():
        return []  # not built yet: building waits until a person picks the set (keeps start-up fast)
    try:
        return analysis.classes_of(set_name)
    except Exception:  # noqa: BLE001 - an unbuilt set has no classes yet; on_set says why
        return []


def on_set(set_name: str, modalities: list):
    spec = analysis.get_set(set_name)
    mods = [m for m in (modalities or []) if m in spec.modalities] or list(spec.modalities[:2])
    try:
        classes = analysis.classes_of(set_name)
        built = ""
    except Exception as exc:  # noqa: BLE001 - an unbuilt set is shown as a message, not an error toast
        classes, built = [], f"⚠ {exc}"
    models = analysis.model_choices(mods)
    pair = [m for m in spec.modalities][:2]
    return (gr.update(choices=list(spec.modalities), value=mods),
            gr.update(choices=models, value=models[0][1]),
            gr.update(choices=classes, value=classes[:4]),
            gr.update(choices=list(spec.modalities), value=pair[0]),
            gr.update(choices=list(spec.modalities), value=pair[1] if len(pair) > 1 else pair[0]),
            gr.update(choices=list(spec.modalities), value=pair[0]),
            gr.update(choices=list(spec.modalities), value=pair[1] if len(pair) > 1 else pair[0]),
            built, None, None)


def on_modalities(modalities: list):
    models = analysis.model_choices(modalities or [])
    return gr.update(choices=models, value=models[0][1])


def build() -> None:
    first = "fsdd"
    spec = analysis.get_set(first)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            set_dd = gr.Dropdown(set_choices(), value=first, label="Set", elem_id="explorer-set")
            built_md = gr.Markdown()
            modalities = gr.CheckboxGroup(list(spec.modalities), value=["speech", "text"], label="Modalities",
                                          elem_id="explorer-modalities")
            model = gr.Dropdown(analysis.model_choices(["speech", "text"]), value="pretrained", label="Model",
                                elem_id="explorer-model")
            method = gr.Radio(METHOD_CHOICES, value="tsne", label="Map", elem_id="explorer-method")
            color_by = gr.Radio(["modality", "class"], value="class", label="Colour by")
            per_class = gr.Slider(2, 100, value=20, step=1, label="Items per class", elem_id="explorer-per-class")
            map_btn = gr.Button("Draw map", variant="primary", elem_id="explorer-map-btn")
            map_md = gr.Markdown(elem_id="explorer-map-note")
        with gr.Column(scale=3, min_width=480):
            map_plot = gr.Plot(label="Embedding map", elem_id="explorer-map")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            gr.Markdown("### Cosine heatmap by class")
            classes = gr.Dropdown(_classes(first), value=_classes(first)[:4], multiselect=True, label="Classes",
                                  elem_id="explorer-classes")
            with gr.Row():
                row_mod = gr.Dropdown(list(spec.modalities), value="speech", label="Rows")
                col_mod = gr.Dropdown(list(spec.modalities), value="text", label="Columns")
            hm_per_class = gr.Slider(2, 50, value=8, step=1, label="Items per class (heatmap)",
                                     elem_id="explorer-hm-per-class")
            hm_btn = gr.Button("Draw heatmap", variant="primary", elem_id="explorer-hm-btn")
            hm_md = gr.Markdown()
        with gr.Column(scale=3, min_width=480):
            hm_plot = gr.Plot(label="Heatmap", elem_id="explorer-heatmap")
    with gr.Accordion("Retrieval probe: direct cosine vs ASIF, and the modality gap", open=True):
        with gr.Row():
            a_mod = gr.Dropdown(list(spec.modalities), value="speech", label="Query view")
            b_mod = gr.Dropdown(list(spec.modalities), value="text", label="Retrieved view")
            anchors = gr.Slider(10, 900, value=300, step=10, label="ASIF anchors")
            k = gr.Slider(1, 200, value=30, step=1, label="ASIF k")
            p = gr.Slider(1, 16, value=8, step=0.5, label="ASIF p")
            trials = gr.Slider(1, 100, value=10, step=1, label="Trials")
        probe_btn = gr.Button("Run probe", elem_id="explorer-probe-btn")
        probe_table = gr.Dataframe(headers=PROBE_HEADERS, label="Top-1 retrieval among each trial's queries",
                                   interactive=False, wrap=True, elem_id="explorer-probe")

    set_dd.change(on_set, [set_dd, modalities], [modalities, model, classes, row_mod, col_mod, a_mod, b_mod,
                                                 built_md, map_plot, hm_plot], queue=False)
    modalities.change(on_modalities, modalities, model, queue=False)
    map_btn.click(draw_map, [set_dd, model, modalities, method, color_by, per_class], [map_plot, map_md],
                  concurrency_id=HEAVY, concurrency_limit=HEAVY_LIMIT)
    hm_btn.click(draw_heatmap, [set_dd, model, row_mod, col_mod, classes, hm_per_class], [hm_plot, hm_md],
                 concurrency_id=HEAVY, concurrency_limit=HEAVY_LIMIT)
    probe_btn.click(run_probe, [set_dd, model, a_mod, b_mod, anchors, k, p, trials], probe_table,
                    concurrency_id=HEAVY, concurrency_limit=HEAVY_LIMIT)


# Shows the thumbnail in a point's customdata next to the cursor (Plotly hover labels cannot hold images).
HOVER_JS = """
<script>
(() => {
  const start = () => {
    const tip = document.createElement('img');
    tip.id = 'xmodal-hover-thumb';
    Object.assign(tip.style, {position: 'fixed', display: 'none', width: '96px', height: '96px',
      objectFit: 'contain', background: 'white', border: '1px solid #ccc', borderRadius: '6px',
      zIndex: 10000, pointerEvents: 'none', boxShadow: '0 2px 8px rgba(0,0,0,.2)'});
    document.body.appendChild(tip);
    setInterval(() => {
      document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
        if (!gd.on || gd._xmodalData === gd.data) return;
        gd._xmodalData = gd.data;
        if (gd.removeAllListeners) { gd.removeAllListeners('plotly_hover'); gd.removeAllListeners('plotly_unhover'); }
        gd.on('plotly_hover', (ev) => {
          const pt = ev.points && ev.points[0];
          const uri = pt && pt.customdata;
          if (typeof uri === 'string' && uri.startsWith('data:image')) {
            tip.src = uri; tip.style.display = 'block';
            tip.style.left = (ev.event.clientX + 18) + 'px'; tip.style.top = (ev.event.clientY + 18) + 'px';
          } else { tip.style.display = 'none'; }
        });
        gd.on('plotly_unhover', () => { tip.style.display = 'none'; });
      });
    }, 700);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
</script>
"""
