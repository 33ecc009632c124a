"""Label page: review queues (uncaptioned images, low alignment scores, search results); accept,
reject or edit a caption or label, record a spoken caption. Every decision is saved to SQLite at once."""
from __future__ import annotations

import time

import gradio as gr

from pages._ui import HEAVY, HEAVY_LIMIT, guarded, progress_fn
from xmodal_core import gallery as galleries
from xmodal_core import labels

QUEUE_CHOICES = [("images without a caption", "uncaptioned"), ("low alignment score", "low-score"),
                 ("search results (sent from Search)", "search")]
LABEL_HEADERS = ["data set", "item", "decision", "caption", "label", "spoken caption", "saved"]


def source_choices(queue: str) -> list[tuple[str, str]]:
    if queue == "low-score":
        return [("Tux Paint stamps", "tuxpaint"), ("emoji", "emoji")]
    if queue == "uncaptioned":
        return [(title, name) for name, title in galleries.list_galleries() if name not in galleries.SET_GALLERIES]
    return [("last search", "search")]


def on_queue_change(queue: str):
    choices = source_choices(queue)
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def _show(items: list, done: int):
    """(image, info, caption, label, status) for the head of the queue."""
    if not items:
        return None, "**Nothing left to review in this queue.**", "", "", f"{done} decided in this session."
    it = items[0]
    score = f" · score {it.score:.3f}" if it.score is not None else ""
    info = f"**{it.item_id}** ({it.dataset}){score}  \n{it.reason}"
    try:
        image = galleries.thumbnail_file(it.image, 384)
    except Exception:  # noqa: BLE001 - a file gone since queueing still lets a person reject it
        image = None
        info += "  \n*(the image cannot be shown: the file is missing or unreadable)*"
    return image, info, it.caption or "", it.label or "", f"{len(items)} to review · {done} decided in this session."


@guarded
def load_queue(queue: str, source: str, sent: list, progress=gr.Progress()):
    """Build the queue -> (items state, done count, image, info, caption, label, status)."""
    if queue == "uncaptioned":
        if not source:
            raise gr.Error("no indexed folders yet: index a folder on the Search page first")
        items = labels.uncaptioned_queue(galleries.open_gallery(source))
    elif queue == "low-score":
        items = labels.low_score_queue(source or "tuxpaint", progress=progress_fn(progress, "scoring pairs"))
    else:
        items = list(sent or [])
        if not items:
            raise gr.Error("no search results to review: search by speech or text, then press "
                           "'Review these results on the Label page'")
    items = labels.pending(items)
    return (items, 0) + _show(items, 0)


@guarded
def decide(items: list, done: int, decision: str, caption: str, label: str):
    """Save a decision on the head of the queue, move on -> (items, done, 5 display values, table)."""
    if not items:
        raise gr.Error("the queue is empty: load a queue first")
    head = items[0]
    if decision == "edit":
        changed_caption = (caption or "").strip() != (head.caption or "").strip()
        changed_label = (label or "").strip() != (head.label or "").strip()
        if not changed_caption and not changed_label:
            raise gr.Error("nothing was edited: change the caption or the label, or press Accept")
        labels.record_decision(head, "edit", text=caption if changed_caption else None,
                               label=label if changed_label else None)
    else:
        labels.record_decision(head, decision)
    rest = items[1:]
    return (rest, done + 1) + _show(rest, done + 1) + (saved_rows(),)


def skip(items: list, done: int):
    rest = (items or [])[1:] + (items or [])[:1]
    return (rest, done) + _show(rest, done)


@guarded
def save_audio(items: list, audio):
    if not items:
        raise gr.Error("the queue is empty: load a queue first")
    lab = labels.save_spoken_caption(items[0], audio)
    return f"Spoken caption saved for {lab.item_id} ({lab.audio_path.rsplit('/', 1)[-1]}).", saved_rows()


def saved_rows(limit: int = 200) -> list[list]:
    """The most recently saved labels, newest first."""
    from xmodal_core.spaces import shared_store

    rows = sorted(shared_store().labels(), key=lambda lab: -lab.updated_at)[:limit]
    return [[lab.dataset, lab.item_id, lab.decision, lab.text or "", lab.label or "",
             "yes" if lab.audio_path else "", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lab.updated_at))]
            for lab in rows]


@guarded
def export(name: str):
    name = (name or "").strip()
    if not name:
        raise gr.Error("type a name for the new data set, e.g. my-labels")
    summary = labels.export_labels(name)
    return f"```\n{summary.format()}\n```\nTrain on it: pick **{name}** as the data on the Train page."


def build(shared: dict) -> None:
    items = gr.State([])
    done = gr.State(0)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            queue = gr.Radio(QUEUE_CHOICES, value="uncaptioned", label="Review queue", elem_id="label-queue")
            first = source_choices("uncaptioned")
            source = gr.Dropdown(first, value=first[0][1] if first else None, label="From", elem_id="label-source")
            load_btn = gr.Button("Load queue", variant="primary", elem_id="label-load")
            status = gr.Markdown()
            with gr.Accordion("Export labels as a data set", open=False):
                export_name = gr.Textbox(label="New data set name", placeholder="my-labels")
                export_btn = gr.Button("Export")
                export_md = gr.Markdown()
        with gr.Column(scale=2, min_width=400):
            image = gr.Image(label="Item", interactive=False, height=300)
            info = gr.Markdown(elem_id="label-info")
            caption = gr.Textbox(label="Caption", lines=2, elem_id="label-caption")
            label = gr.Textbox(label="Label")
            with gr.Row():
                accept = gr.Button("Accept", variant="primary", elem_id="label-accept")
                reject = gr.Button("Reject", variant="stop")
                edit = gr.Button("Save edit")
                skip_btn = gr.Button("Skip")
            with gr.Row():
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Spoken caption",
                                 elem_id="label-audio")
                audio_btn = gr.Button("Save spoken caption", scale=0, elem_id="label-audio-btn")
            audio_md = gr.Markdown(elem_id="label-audio-msg")
    table = gr.Dataframe(value=saved_rows, headers=LABEL_HEADERS, label="Saved labels", interactive=False,
                         wrap=True, max_height=300, elem_id="label-table")

    shown = [image, info, caption, label, status]
    queue.change(on_queue_change, queue, source, queue=False)
    load_btn.click(load_queue, [queue, source, shared["review"]], [items, done] + shown, concurrency_id=HEAVY,
                   concurrency_limit=HEAVY_LIMIT)
    for btn, decision in ((accept, "accept"), (reject, "reject"), (edit, "edit")):
        btn.click(lambda it, d, c, lab, _dec=decision: decide(it, d, _dec, c, lab), [items, done, caption, label],
                  [items, done] + shown + [table])
    skip_btn.click(skip, [items, done], [items, done] + shown, queue=False)
    audio_btn.click(save_audio, [items, audio], [audio_md, table])
    export_btn.click(export, export_name, export_md)
    # Galleries indexed on the Search page appear here without a reload.
    source.focus(lambda q: gr.update(choices=source_choices(q)), queue, source, queue=False)
