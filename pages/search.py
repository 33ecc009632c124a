"""Search page: query by voice, audio file, image or text; results from a gallery with scores,
the transcript, and a per-stage latency breakdown. Index any folder of images as a gallery."""
from __future__ import annotations

import gradio as gr

from pages._ui import HEAVY, HEAVY_LIMIT, guarded, progress_fn, warn
from xmodal_core import gallery as galleries
from xmodal_core import labels
from xmodal_core.search import (DEFAULT_K_COARSE, MODE_HELP, MODES, Query, check_mode, find_gallery, format_timings,
                                hit_rows, search, search_recordings)

QUERY_KINDS = {"Record": "speech-mic", "Audio file": "speech-file", "Image": "image", "Text": "text"}
HIT_HEADERS = ["rank", "score", "caption", "item"]
TIMING_HEADERS = ["stage", "ms"]
TARGETS = [("images", "images"), ("spoken captions (people)", "recordings")]
AUDIO_SLOTS = 6


def gallery_choices() -> list[tuple[str, str]]:
    """(title, name) pairs for the gallery dropdown."""
    return [(title, name) for name, title in galleries.list_galleries()]


def make_query(kind: str, mic, audio_file, image_file, text) -> Query:
    """The checked query from whichever input the selected tab holds."""
    if kind == "speech-mic":
        return Query.from_input("speech", mic)
    if kind == "speech-file":
        return Query.from_input("speech", audio_file)
    if kind == "image":
        return Query.from_input("image", image_file)
    return Query.from_input("text", text)


def _audio_slots(hits) -> list:
    """Updates for the audio players and their captions (spoken-caption results)."""
    from xmodal_core import spaces

    shown = [h for h in hits if h.item.audio][:AUDIO_SLOTS]
    heard = spaces.transcribe([h.item.audio for h in shown]) if shown else []
    out = []
    for i in range(AUDIO_SLOTS):
        if i < len(shown):
            h = shown[i]
            out += [gr.update(value=h.item.audio, visible=True, label=f"#{h.rank} · {h.score:.3f}"),
                    gr.update(value=f"“{h.item.caption or ''}” — heard as “{heard[i]}” ({h.item.dataset})",
                              visible=True)]
        else:
            out += [gr.update(value=None, visible=False), gr.update(value="", visible=False)]
    return out


def run_search(kind: str, mic, audio_file, image_file, text, gallery_name: str, mode: str, k: int, k_coarse: int,
               asif_k: int, asif_p: float, target: str = "images", progress=gr.Progress()):
    """Search handler -> (heard, result grid, timings rows, hit rows, review items); spoken-caption
    results also fill the audio players (see `run_search_ui`)."""
    return _run_search(kind, mic, audio_file, image_file, text, gallery_name, mode, k, k_coarse, asif_k, asif_p,
                       target, progress)[:5]


@guarded
def run_search_ui(kind, mic, audio_file, image_file, text, gallery_name, mode, k, k_coarse, asif_k, asif_p, target,
                  progress=gr.Progress()):
    out = _run_search(kind, mic, audio_file, image_file, text, gallery_name, mode, k, k_coarse, asif_k, asif_p,
                      target, progress)
    return out[:5] + tuple(out[5])


@guarded
def _run_search(kind, mic, audio_file, image_file, text, gallery_name, mode, k, k_coarse, asif_k, asif_p, target,
                progress):
    query = make_query(kind, mic, audio_file, image_file, text)
    check_mode(mode)
    report = progress_fn(progress, "indexing (once)")
    if target == "recordings":
        gallery = galleries.recordings_gallery()
        result = search_recordings(gallery, query, mode, k=min(int(k), 24), asif_k=int(asif_k),
                                   asif_p=float(asif_p), progress=report)
    else:
        gallery = find_gallery(gallery_name)
        labels.apply_captions(gallery)
        result = search(gallery, query, mode, k=int(k), k_coarse=int(k_coarse), asif_k=int(asif_k),
                        asif_p=float(asif_p), progress=report)
    warn(result.notes)
    if query.kind == "speech" and result.heard_as is not None and result.transcript is None:
        how = "direct" if result.path == "direct" else "adapted head"
        heard = f"**Heard as ({how}, no ASR):** “{result.heard_as}” (cosine {result.confidence:.2f})"
    elif query.kind == "speech":
        heard = f"**Heard as:** “{result.transcript}”" if result.transcript is not None else \
            "**Heard as:** (speech embedded directly; no transcript in this mode)"
    elif query.kind == "text":
        heard = f"**Query:** “{query.text}”"
    else:
        heard = "**Query:** an image"
    heard += f"  \n**Mode:** {mode} — {result.model}  \n**Total:** {result.total_ms:.0f} ms"
    grid = [(galleries.thumbnail_file(path), f"{h.score:.3f} · {h.item.text}") for h in result.hits
            if (path := galleries.served_image(gallery, h.item))]
    review_text = result.transcript if query.kind == "speech" else query.text
    review = labels.search_queue(gallery.name, review_text, [h for h in result.hits if h.item.image]) \
        if review_text and target != "recordings" else []
    audio = _audio_slots(result.hits) if target == "recordings" else _audio_slots([])
    return heard, grid, format_timings(result), hit_rows(result), review, audio


def adaptation_status(gallery_name: str) -> str:
    from xmodal_core.adapt.core import describe
    from xmodal_core.validate import check_name

    try:
        return describe(check_name(gallery_name or galleries.DEFAULT_NAME, "gallery name"))
    except Exception as exc:  # noqa: BLE001 - a status line must never break the page
        return f"**Direct speech:** status unavailable ({exc})"


@guarded
def adapt_gallery(gallery_name: str, voices: float, progress=gr.Progress()):
    """Adapt the speech head to the gallery's names -> (report markdown, status line)."""
    from xmodal_core.adapt import AdaptConfig, adapt

    def report(stage: str, done: int, total: int) -> None:
        if total:
            progress((done, total), desc=f"adapting: {stage}", unit="items")

    name = gallery_name or galleries.DEFAULT_NAME
    result = adapt(name, config=AdaptConfig(voices=int(voices)), progress=report)
    return result.format().replace("\n", "  \n"), adaptation_status(name)


@guarded
def index_folder(folder: str, progress=gr.Progress()):
    """Index a folder -> (report markdown, gallery dropdown update)."""
    gallery, report = galleries.index_folder((folder or "").strip(), progress=progress_fn(progress, "indexing"))
    if report.skipped:
        gr.Warning(f"{len(report.skipped)} files skipped: " + "; ".join(
            f"{s.path.rsplit('/', 1)[-1]}: {s.reason}" for s in report.skipped[:3]))
    return report.format(), gr.update(choices=gallery_choices(), value=gallery.name)


@guarded
def preview_image(path):
    """Check an uploaded query image at once and show it (or say what is wrong with it)."""
    if not path:
        return None
    from xmodal_core.images import load_image

    return galleries.thumbnail_file(path, 384) if load_image(path) is not None else None


def mode_help(mode: str):
    return f"*{MODE_HELP.get(mode, '')}*", gr.update(visible=mode == "coarse-to-fine")


def build(shared: dict) -> None:
    """The Search tab. `shared["review"]` receives review items for the Label page."""
    kind = gr.State("speech-file")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            with gr.Tabs(selected="speech-file"):
                with gr.Tab("Record", id="speech-mic") as t_mic:
                    mic = gr.Audio(sources=["microphone"], type="filepath", label="Record a spoken query",
                                   elem_id="search-mic")
                with gr.Tab("Audio file", id="speech-file") as t_file:
                    audio_file = gr.Audio(sources=["upload"], type="filepath", label="Spoken query (audio file)",
                                          elem_id="search-audio")
                with gr.Tab("Image", id="image") as t_img:
                    image_file = gr.File(label="Query image", file_types=["image"], type="filepath", height=90,
                                         elem_id="search-image")
                    image_preview = gr.Image(label="Query image preview", interactive=False, height=180)
                with gr.Tab("Text", id="text") as t_text:
                    text = gr.Textbox(label="Text query", placeholder="a red apple", lines=2, elem_id="search-text")
            for tab, value in ((t_mic, "speech-mic"), (t_file, "speech-file"), (t_img, "image"), (t_text, "text")):
                tab.select(lambda v=value: v, None, kind, queue=False)
            target = gr.Radio(TARGETS, value="images", label="Find", elem_id="search-target")
            gallery_dd = gr.Dropdown(choices=gallery_choices(), value=galleries.DEFAULT_NAME, label="Gallery",
                                     allow_custom_value=False, elem_id="search-gallery")
            mode = gr.Radio(list(MODES), value="cascade", label="Mode", elem_id="search-mode")
            mode_md = gr.Markdown(f"*{MODE_HELP['cascade']}*")
            k_coarse = gr.Slider(10, 500, value=DEFAULT_K_COARSE, step=10, label="K_c (coarse candidates to rerank)",
                                 visible=False)
            k = gr.Slider(1, 48, value=12, step=1, label="Results")
            with gr.Accordion("ASIF settings", open=False):
                asif_k = gr.Slider(5, 400, value=90, step=5, label="ASIF kept anchors per row (k)")
                asif_p = gr.Slider(1, 16, value=8, step=0.5, label="ASIF exponent (p)")
            go = gr.Button("Search", variant="primary", elem_id="search-go")
            with gr.Accordion("Direct speech: adapt to this gallery's names", open=False):
                adapt_md = gr.Markdown(adaptation_status(galleries.DEFAULT_NAME), elem_id="search-adapt-status")
                voices = gr.Slider(1, 40, value=20, step=1, label="Synthetic voices per name")
                adapt_btn = gr.Button("Adapt speech to this gallery", elem_id="search-adapt")
                adapt_report = gr.Markdown(elem_id="search-adapt-report")
            with gr.Accordion("Index a folder of images", open=False):
                folder = gr.Textbox(label="Folder to index", placeholder="/home/me/Pictures/animals",
                                    elem_id="search-folder")
                index_btn = gr.Button("Index folder", elem_id="search-index")
                index_report = gr.Markdown(elem_id="search-index-report")
        with gr.Column(scale=3, min_width=420):
            heard = gr.Markdown("Record or upload a spoken caption, pick an image, or type text, then **Search**.",
                                elem_id="search-heard")
            results = gr.Gallery(label="Results", columns=4, height=420, object_fit="contain", allow_preview=True,
                                 elem_id="search-results")
            players = []
            with gr.Column(elem_id="search-audio-results"):
                for i in range(0, AUDIO_SLOTS, 2):
                    with gr.Row():
                        for _ in range(2):
                            with gr.Column(min_width=200):
                                players.append(gr.Audio(visible=False, interactive=False, type="filepath"))
                                players.append(gr.Markdown(visible=False))
            with gr.Row():
                timings = gr.Dataframe(headers=TIMING_HEADERS, label="Latency by stage", interactive=False,
                                       max_height=260, elem_id="search-timings", scale=2,
                                       column_widths=["72%", "28%"])
                hits = gr.Dataframe(headers=HIT_HEADERS, label="Scores", interactive=False, wrap=True,
                                    max_height=260, elem_id="search-hits", scale=3,
                                    column_widths=["10%", "14%", "38%", "38%"])
            review_btn = gr.Button("Review these results on the Label page", size="sm")
            review_md = gr.Markdown()

    last_review = gr.State([])
    mode.change(mode_help, mode, [mode_md, k_coarse], queue=False)
    image_file.change(preview_image, image_file, image_preview, concurrency_limit=2)
    inputs = [kind, mic, audio_file, image_file, text, gallery_dd, mode, k, k_coarse, asif_k, asif_p, target]
    outputs = [heard, results, timings, hits, last_review] + players
    go.click(run_search_ui, inputs, outputs, concurrency_id=HEAVY, concurrency_limit=HEAVY_LIMIT)
    text.submit(lambda: "text", None, kind, queue=False).then(run_search_ui, inputs, outputs, concurrency_id=HEAVY,
                                                              concurrency_limit=HEAVY_LIMIT)
    target.change(lambda t: gr.update(interactive=t == "images"), target, gallery_dd, queue=False)
    gallery_dd.change(adaptation_status, gallery_dd, adapt_md, queue=False)
    adapt_btn.click(adapt_gallery, [gallery_dd, voices], [adapt_report, adapt_md], concurrency_id="adapt",
                    concurrency_limit=1)
    index_btn.click(index_folder, folder, [index_report, gallery_dd], concurrency_id=HEAVY,
                    concurrency_limit=HEAVY_LIMIT)

    def send(items):
        if not items:
            raise gr.Error("search by speech or text first: there are no results to review")
        return items, f"{len(items)} results sent: open the **Label** tab and pick the 'search' queue."

    review_btn.click(send, last_review, [shared["review"], review_md], queue=False)
