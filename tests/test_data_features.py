"""Frozen-feature cache: computes only what is missing, survives kills and concurrent writers,
and never serves features of other weights or of changed files."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

from xmodal_core.data.features import FeatureCache, extract_features
from xmodal_core.data.manifest import Record, write_manifest
from xmodal_core.encoders.base import Encoder
from xmodal_core.errors import DatasetError, InputError

REPO = Path(__file__).resolve().parent.parent


def expected_vector(item: str, version: str = "v1", dim: int = 8) -> np.ndarray:
    """What FakeEncoder returns, computed independently of it."""
    raw = hashlib.sha256(f"{version}|{item}".encode()).digest()
    v = np.frombuffer(raw[: dim * 2], dtype=np.int16).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEncoder(Encoder):
    """A deterministic tower that counts what it encodes; image items are hashed by file content."""

    token_dim = 4
    batch_size = 4

    def __init__(self, modality: str = "text", version: str = "v1", delay: float = 0.0, fail_after: int | None = None):
        self.name, self.modality, self.dim = f"fake-{modality}", modality, 8
        self.version, self.delay, self.fail_after = version, delay, fail_after
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def module(self) -> torch.nn.Module:
        return torch.nn.Identity()

    @property
    def weights_id(self) -> str:
        return f"{self.name}-{self.version}"

    def _key(self, item) -> str:
        if self.modality == "text":
            if item == "BAD":
                raise InputError("cannot encode the word BAD")
            return item
        return Path(item).read_bytes().decode()

    def encode_batch(self, items: Sequence[str]) -> torch.Tensor:
        keys = [self._key(it) for it in items]
        for _ in keys:
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                raise KeyboardInterrupt("killed")
            time.sleep(self.delay)
        return torch.from_numpy(np.stack([expected_vector(k, self.version) for k in keys]))

    def encode_tokens(self, items: Sequence[str]):
        words = [self._key(it).split() for it in items]
        t = max(len(w) for w in words)
        tokens = torch.zeros(len(items), t, 4)
        mask = torch.zeros(len(items), t, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                tokens[i, j] = torch.from_numpy(expected_vector(w, self.version, 4)) * (j + 1)
                mask[i, j] = True
        return tokens, mask


def text_records(n: int, prefix: str = "t") -> list[Record]:
    return [Record(id=f"{prefix}{i}", text=f"caption number {i}", group=f"{prefix}{i}") for i in range(n)]


def test_get_computes_only_what_is_missing_and_matches_the_encoder(xmodal_home):
    enc = FakeEncoder()
    cache = FeatureCache(enc, shard_items=4)
    records = text_records(12)
    first = cache.get(records[:5], "text")
    assert enc.calls == 5
    calls = []
    both = cache.get(records, "text", progress=lambda done, total: calls.append((done, total)))
    assert enc.calls == 12
    assert calls[0] == (5, 12) and calls[-1] == (12, 12)      # cached records count as done from the start
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    want = np.stack([expected_vector(r.text) for r in records])
    np.testing.assert_allclose(both, want, atol=1e-6)
    np.testing.assert_array_equal(first, both[:5])
    # A fresh cache object (another process, later) reads everything from disk.
    fresh_enc = FakeEncoder()
    np.testing.assert_array_equal(FeatureCache(fresh_enc).get(records), both)
    assert fresh_enc.calls == 0


def test_shared_captions_are_computed_once(xmodal_home):
    enc = FakeEncoder()
    records = [Record(id=f"img{i}", image=f"{i}.png", text="a red apple", group="apple") for i in range(6)]
    out = FeatureCache(enc).get(records, "text")
    assert enc.calls == 1 and np.allclose(out, expected_vector("a red apple"))


def test_changed_weights_or_preprocessing_invalidate_old_entries(xmodal_home):
    records = text_records(4)
    old = FeatureCache(FakeEncoder(version="v1"))
    a = old.get(records)
    new_enc = FakeEncoder(version="v2")   # e.g. a new preprocessing version changes weights_id
    new = FeatureCache(new_enc)
    b = new.get(records)
    assert new_enc.calls == 4 and new.directory != old.directory
    np.testing.assert_allclose(b[0], expected_vector(records[0].text, "v2"), atol=1e-6)
    assert not np.allclose(a, b)
    assert new.stale_directories() == [old.directory]


def test_a_changed_file_is_recomputed(xmodal_home, tmp_path):
    path = tmp_path / "item.png"
    path.write_text("first picture")
    record = Record(id="x", image=str(path), group="x")
    enc = FakeEncoder("image")
    cache = FeatureCache(enc)
    np.testing.assert_allclose(cache.get([record], "image")[0], expected_vector("first picture"), atol=1e-6)
    path.write_text("second picture")      # same record id, new content
    np.testing.assert_allclose(cache.get([record], "image")[0], expected_vector("second picture"), atol=1e-6)
    assert enc.calls == 2


def test_wrong_modality_and_missing_views_are_input_errors(xmodal_home):
    cache = FeatureCache(FakeEncoder("text"))
    with pytest.raises(InputError, match="encodes text"):
        cache.get(text_records(1), "image")
    with pytest.raises(InputError, match="has no text"):
        cache.get([Record(id="a", audio="a.wav", group="a")])


def test_get_names_a_bad_record_and_extract_skips_it(xmodal_home):
    records = text_records(5) + [Record(id="broken", text="BAD", group="broken")]
    with pytest.raises(DatasetError, match="broken"):
        FeatureCache(FakeEncoder(), shard_items=8).get(records)
    enc = FakeEncoder()
    report = FeatureCache(enc, shard_items=8).extract(records)
    assert report.skipped == [("broken", "cannot encode the word BAD")]
    assert report.computed + report.cached == 5


def test_an_interrupted_extraction_resumes_where_it_stopped(xmodal_home):
    records = text_records(20)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache(FakeEncoder(fail_after=10), shard_items=4).extract(records)
    enc = FakeEncoder()
    cache = FeatureCache(enc, shard_items=4)
    done = cache.cached(records)
    assert done.sum() == 8 and done[:8].all()          # two whole shards survived
    report = cache.extract(records)
    assert (report.cached, report.computed, enc.calls) == (8, 12, 12)


_WORKER = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.test_data_features import FakeEncoder, text_records
from xmodal_core.data.features import FeatureCache
rep = FeatureCache(FakeEncoder(delay={delay}), shard_items={shard}).extract(text_records({n}))
print(rep.computed, flush=True)
"""


def _worker(n: int, delay: float, shard: int) -> subprocess.Popen:
    code = _WORKER.format(repo=str(REPO), n=n, delay=delay, shard=shard)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _shards(home: Path) -> list[Path]:
    return sorted((home / "features").rglob("shard-*.safetensors"))


def test_sigkill_mid_extraction_loses_at_most_the_current_shard(xmodal_home):
    proc = _worker(n=60, delay=0.05, shard=5)
    deadline = time.time() + 60
    while len(_shards(xmodal_home)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivors = len(_shards(xmodal_home))
    assert survivors >= 2
    enc = FakeEncoder()
    cache = FeatureCache(enc, shard_items=5)
    records = text_records(60)
    report = cache.extract(records)
    assert report.cached >= 10 and report.cached + report.computed == 60 and enc.calls == report.computed
    np.testing.assert_allclose(cache.get(records), np.stack([expected_vector(r.text) for r in records]), atol=1e-6)


def test_two_processes_extracting_at_once_leave_a_consistent_cache(xmodal_home):
    procs = [_worker(n=40, delay=0.02, shard=4) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    computed = [int(o[0].split()[-1]) for o in outs]
    assert sum(computed) >= 40          # each item at least once; overlap is allowed, corruption is not
    enc = FakeEncoder()
    cache = FeatureCache(enc)
    records = text_records(40)
    np.testing.assert_allclose(cache.get(records), np.stack([expected_vector(r.text) for r in records]), atol=1e-6)
    assert enc.calls == 0
    merged = cache.compact()
    assert merged >= 2 and len(_shards(xmodal_home)) == 1
    np.testing.assert_allclose(FeatureCache(FakeEncoder()).get(records), cache.get(records), atol=0)


def test_token_features_round_trip_with_their_masks(xmodal_home):
    enc = FakeEncoder()
    records = [Record(id="a", text="one two three", group="a"), Record(id="b", text="four", group="b")]
    tokens, mask = FeatureCache(enc).get_tokens(records)
    want_tokens, want_mask = enc.encode_tokens([r.text for r in records])
    assert tokens.dtype == torch.float32 and tokens.shape == (2, 3, 4)
    assert torch.equal(mask, want_mask)
    torch.testing.assert_close(tokens, want_tokens, atol=5e-3, rtol=2e-3)   # stored as float16
    enc.calls = 0
    tokens2, _ = FeatureCache(enc).load_tokens(records[::-1])
    torch.testing.assert_close(tokens2[0, :1], tokens[1, :1])


def test_real_text_encoder_through_the_cli_and_the_api(xmodal_home, capsys):
    from xmodal_core.cli import main
    from xmodal_core.registry import get_encoder

    records = [Record(id=f"r{i}", text=t, group=f"r{i}", split="train")
               for i, t in enumerate(["a red apple", "a dog on the grass", "seven", "a photo of a cat"])]
    write_manifest(xmodal_home / "datasets" / "mini" / "manifest.jsonl", records)
    assert main(["features", "extract", "--dataset", "mini", "--encoder", "minilm", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["computed"], report["cached"], report["modality"]) == (4, 0, "text")
    got = FeatureCache("minilm").get(records, "text")
    np.testing.assert_allclose(got, get_encoder("minilm").encode([r.text for r in records]), atol=1e-5)
    assert main(["features", "extract", "--dataset", "mini", "--encoder", "minilm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] == 4
    assert main(["features", "extract", "--dataset", "never-built", "--encoder", "minilm"]) == 2
    assert "xmodal data build" in capsys.readouterr().err


def test_extract_features_refuses_a_set_without_the_encoders_modality(xmodal_home):
    write_manifest(xmodal_home / "datasets" / "speechonly" / "manifest.jsonl",
                   [Record(id="a", audio="/x.wav", group="a")])
    with pytest.raises(DatasetError, match="no text records"):
        extract_features("speechonly", FakeEncoder())
