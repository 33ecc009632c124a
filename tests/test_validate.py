"""Every text and number a person gives is checked once at the boundary, with one clear message
per violation: lone surrogates, NUL bytes, over-long names and paths, out-of-range settings,
binary files given as configs or data sets, paths outside the data folders."""
from __future__ import annotations

import argparse
import json
import os

import pytest

from xmodal_core import validate
from xmodal_core.errors import DatasetError, InputError


@pytest.mark.parametrize("text, match", [
    ("a frog \udc80 jumping", r"lone surrogate, U\+DC80\) at position 7"),
    ("a\x00b", "NUL character"),
    ("x" * (validate.MAX_QUERY_CHARS + 1), f"{validate.MAX_QUERY_CHARS + 1} characters long; the limit is"),
    ("   ", "empty"),
    (b"bytes", "must be text"),
])
def test_bad_text_gets_one_message(text, match):
    with pytest.raises(InputError, match=match):
        validate.check_text(text, "text query")


def test_good_text_passes_unchanged():
    assert validate.check_text(" a café, 🐸 ", "text query") == " a café, 🐸 "


@pytest.mark.parametrize("name", ["x" * 300, "y" * 500])
def test_long_names_give_a_message_not_file_name_too_long(xmodal_home, name):
    from xmodal_core.data import load_manifest

    with pytest.raises(InputError, match="characters long"):
        load_manifest(name)
    with pytest.raises(InputError, match="component of"):
        load_manifest(f"/tmp/{name}.jsonl")


@pytest.mark.parametrize("setting, value, match", [
    ("lr", 1e308, "lr must be between"),
    ("lr", "nan", "finite"),
    ("epochs", 1e9, "epochs must be between 1 and 1000"),
    ("epochs", 2.5, "whole number"),
    ("batch_size", 0, "batch_size must be between"),
    ("max_train", -5, "max_train must be between 0"),
    ("dropout", True, "must be a number"),
])
def test_training_settings_have_ranges(setting, value, match):
    from xmodal_core import train_presets as tp

    preset = next(p for p in tp.presets().values() if p.kind == "align")
    with pytest.raises(InputError, match=match):
        tp.make_config(preset.kind, dict(preset.config), **{setting: value})


def test_cli_set_lr_1e308_is_refused_before_a_run_is_made(xmodal_home):
    from trainers.commands import build_config
    from xmodal_core.store import Store

    with pytest.raises(InputError, match="lr must be between"):
        build_config("trainers/configs/image_text_cwcl.json", ["lr=1e308"])
    assert Store().list_runs() == []
    kind, _, config = build_config("trainers/configs/image_text_cwcl.json", ["lr=0.002", "max_train=0"])
    assert config["lr"] == 0.002 and config["max_train"] == 0


def test_a_binary_file_as_config_or_data_set_gives_a_message(tmp_path):
    from trainers.commands import build_config
    from xmodal_core.data import load_manifest

    blob = tmp_path / "model.jsonl"
    blob.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(InputError, match="binary file"):
        build_config(str(blob), [])
    with pytest.raises(DatasetError, match="binary file|not UTF-8"):
        load_manifest(blob)
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"lr": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        build_config(str(latin), [])


@pytest.mark.parametrize("path", ["/etc/shadow", "/proc/self/environ", "/etc/passwd", "../../etc/hosts.jsonl"])
def test_the_train_page_data_field_reads_only_the_data_folders(xmodal_home, path):
    from xmodal_core import train_presets as tp

    secret = open("/etc/hostname").read().strip() if os.path.exists("/etc/hostname") else "root:"
    with pytest.raises(InputError, match="outside the folders it may be read from") as info:
        tp.check_dataset(path, ("image", "text"))
    assert secret not in str(info.value).replace(path, "")


def test_train_page_launch_refuses_etc_shadow(xmodal_home):
    import gradio as gr

    from pages import train as tr
    from xmodal_core.runner import Runner
    from xmodal_core.store import Store

    tr._state["runner"] = Runner(Store())
    try:
        with pytest.raises((gr.Error, InputError), match="outside the folders"):
            _call_launch(tr.launch, "/etc/shadow")
        assert Store().list_runs() == []
    finally:
        tr._state["runner"] = None


def _call_launch(launch, dataset):
    import inspect

    from xmodal_core import train_presets as tp

    params = inspect.signature(launch).parameters
    preset = next(name for name, p in tp.presets().items() if p.kind == "align")
    values = dict(preset_name=preset, kind="align", dataset=dataset, towers="image-text", locked="text", loss="cwcl",
                  batch_size=8, lr=1e-3, epochs=1, max_pairs=0, run_name="")
    return launch(**{k: values[k] for k in params if k in values})


def test_a_manifest_inside_the_home_is_accepted(xmodal_home, tmp_path):
    from xmodal_core import paths

    inside = paths.home() / "mine" / "manifest.jsonl"
    inside.parent.mkdir(parents=True)
    inside.write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    assert validate.check_data_source(str(inside)) == str(inside.resolve())
    assert validate.check_data_source("tuxpaint") == "tuxpaint"


def test_transcribe_max_seconds_must_be_positive(capsys):
    from xmodal_core.cli import towers as cli

    args = argparse.Namespace(max_seconds=-1.0, files=["x.wav"], model="whisper-tiny.en", json=False)
    with pytest.raises(InputError, match="--max-seconds must be between 0.1"):
        cli.cmd_transcribe(args)


# ------------------------------------------------------------ templates, queries, limits

def test_template_lists_are_checked_line_by_line():
    from xmodal_core.zeroshot import parse_templates

    with pytest.raises(InputError, match=r"line 2 contains an invalid character"):
        parse_templates("a photo of a {}\nit is \udcff about {}")
    with pytest.raises(InputError, match="line 1 contains a NUL"):
        parse_templates("a {}\x00")
    with pytest.raises(InputError, match=f"more than {validate.MAX_TEMPLATES} templates"):
        parse_templates("\n".join(f"photo {i} of a {{}}" for i in range(10_000)))
    with pytest.raises(InputError, match="characters long"):
        parse_templates("a " + "very " * 100 + "long {}")
    assert parse_templates("\n".join(f"photo {i} of a {{}}" for i in range(validate.MAX_TEMPLATES)))[-1] == \
        f"photo {validate.MAX_TEMPLATES - 1} of a {{}}"


def test_a_10000_template_evaluation_is_refused_quickly(xmodal_home):
    import time

    from xmodal_core import analysis

    text = "\n".join(f"photo {i} of a {{}}" for i in range(10_000))
    start = time.perf_counter()
    with pytest.raises(InputError, match="more than"):
        analysis.zero_shot_curves("fsdd", ["minilm"], text)
    assert time.perf_counter() - start < 2.0


def test_template_list_names_and_texts_are_limited(xmodal_home):
    from xmodal_core.store import Store

    store = Store()
    with pytest.raises(InputError, match="characters long"):
        store.save_templates("n" * 10_000, "a {}")
    with pytest.raises(InputError, match="surrogate"):
        store.save_templates("bad \udce9 name", "a {}")
    assert store.save_templates("my list", "a {}").name == "my list"
    assert [t.name for t in store.template_lists()] == ["my list"]


@pytest.mark.parametrize("text, match", [("a \udc80 frog", "surrogate"), ("frog\x00", "NUL")])
def test_text_queries_are_checked(text, match):
    from xmodal_core.search import Query

    with pytest.raises(InputError, match=match):
        Query.from_input("text", text)


def test_map_and_evaluation_sizes_are_limited():
    from xmodal_core import analysis

    with pytest.raises(InputError, match=f"between 1 and {analysis.MAX_PER_CLASS}"):
        analysis.sample("fsdd", ["speech"], 10_000)
    with pytest.raises(InputError, match="at most"):
        analysis.zero_shot_curves("fsdd", ["minilm"] * 20, "a {}")
