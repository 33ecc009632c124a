"""Whisper tiny.en from CTranslate2 weights: conversion cache, utterance-length tower, greedy ASR.

Real data only: LibriVox sentences (Debian `pocketsphinx-testdata`) for ASR and
FSDD spoken digits (`../shared/data/fsdd`) for the tower. The model is converted
into `$XMODAL_HOME` (default ./.xmodal) once and reused across runs.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from xmodal_core.asr_metrics import edit_distance, normalize_words, word_error_rate
from xmodal_core.audio import Audio, load_audio
from xmodal_core.encoders.ctranslate2 import CT2FormatError, read_ct2_model
from xmodal_core.encoders.whisper import (
    WhisperEncoder,
    WhisperTranscriber,
    converted_weights,
    default_model_dir,
    length_batches,
    load_whisper_tiny_en,
    log_mel,
    n_mel_frames,
)
from xmodal_core.errors import AudioError, ModelNotFoundError, XmodalError
from xmodal_core.paths import SHARED_DATA

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
FSDD = SHARED_DATA / "fsdd" / "recordings"


def fsdd(digit: int, speaker: str, take: int) -> Path:
    path = FSDD / f"{digit}_{speaker}_{take}.wav"
    if not path.is_file():
        pytest.skip(f"FSDD recording {path} is not available")
    return path


def librivox_wav(number: str) -> Path:
    path = LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{number}.wav"
    if not path.is_file():
        pytest.skip("Debian package pocketsphinx-testdata is not installed")
    return path


def librivox_pairs() -> list[tuple[Path, str]]:
    """(wav, reference) for the 5 sentences, from the package's `transcription` file."""
    listing = LIBRIVOX / "transcription"
    if not listing.is_file():
        pytest.skip("Debian package pocketsphinx-testdata is not installed")
    pairs = []
    for line in listing.read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((\S+)\)", line)
        if m:
            pairs.append((LIBRIVOX / f"{m.group(2)}.wav", m.group(1)))
    return pairs


@pytest.fixture(scope="session")
def encoder() -> WhisperEncoder:
    enc = WhisperEncoder(device="cpu")
    enc.module()  # load (or convert, on the very first run) once for the session
    return enc


# ----------------------------------------------------------------- CTranslate2 reader and cache


def test_ct2_reader_gives_whisper_tiny_en_shapes():
    name, variables, aliases = read_ct2_model(default_model_dir())
    assert name == "WhisperSpec"
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert variables["encoder/layer_3/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert variables["decoder/embeddings/weight"].dtype == np.float16
    assert int(variables["encoder/num_heads"]) == 6
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}


def test_truncated_or_wrong_model_bin_gives_a_clear_error(tmp_path):
    source = default_model_dir() / "model.bin"
    data = source.read_bytes()
    cases = {
        "head": data[:1_000_000],  # cut inside a tensor
        "tail": data[:-10],  # cut inside the alias table
        "json": (default_model_dir() / "config.json").read_bytes(),  # not a CT2 file at all
    }
    for label, blob in cases.items():
        folder = tmp_path / label
        folder.mkdir()
        (folder / "model.bin").write_bytes(blob)
        with pytest.raises(CT2FormatError) as info:
            read_ct2_model(folder / "model.bin")
        assert isinstance(info.value, ModelNotFoundError) and isinstance(info.value, XmodalError)
        assert str(folder / "model.bin") in str(info.value)
        assert "reinstall" in str(info.value)
        # The converter refuses it too, and leaves no cache entry behind.
        cache = tmp_path / f"cache-{label}"
        with pytest.raises(XmodalError):
            converted_weights(folder, cache_dir=cache)
        assert not list(cache.glob("*.safetensors"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        converted_weights(tmp_path / "nowhere", cache_dir=tmp_path / "cache")


def test_converted_weight_cache_is_faster_and_identical(tmp_path):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    first = converted_weights(cache_dir=cache)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = converted_weights(cache_dir=cache)
    t_second = time.perf_counter() - t0
    print(f"\nconvert {t_first * 1e3:.0f} ms, cached {t_second * 1e3:.0f} ms, speedup {t_first / t_second:.0f}x")
    assert not first.from_cache and second.from_cache
    assert t_second * 5 < t_first
    assert first.sha256 == second.sha256
    assert first.state_dict.keys() == second.state_dict.keys()
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)

    # Independent check of the mapping: q, k, v are thirds of CT2's fused projection; k has no bias.
    _, variables, _ = read_ct2_model(default_model_dir())
    fused_w = variables["encoder/layer_2/self_attention/linear_0/weight"]
    fused_b = variables["encoder/layer_2/self_attention/linear_0/bias"]
    sd = second.state_dict
    np.testing.assert_array_equal(sd["model.encoder.layers.2.self_attn.k_proj.weight"].numpy(), fused_w[384:768])
    np.testing.assert_array_equal(sd["model.encoder.layers.2.self_attn.v_proj.bias"].numpy(), fused_b[768:])
    assert "model.encoder.layers.2.self_attn.k_proj.bias" not in sd

    # A damaged cache file is replaced by a fresh conversion, not loaded.
    with open(second.safetensors_path, "r+b") as f:
        f.truncate(1000)
    third = converted_weights(cache_dir=cache)
    assert not third.from_cache
    assert all(torch.equal(first.state_dict[k], third.state_dict[k]) for k in first.state_dict)


# ----------------------------------------------------------------- features and the speech tower


def test_utterance_log_mel_matches_the_30s_padded_features():
    _, _, fe = load_whisper_tiny_en("cpu")
    for path in (fsdd(7, "george", 3), librivox_wav("0880")):
        samples = load_audio(path).samples
        mine = log_mel(samples)
        assert mine.shape == (80, n_mel_frames(len(samples))) and mine.shape[1] % 2 == 0
        padded = fe(samples, sampling_rate=16000, return_tensors="np").input_features[0]  # (80, 3000)
        np.testing.assert_allclose(mine.numpy(), padded[:, :mine.shape[1]], atol=1e-4)


def test_batched_encoding_equals_one_by_one(encoder):
    clips = [fsdd(d, "jackson", t) for d, t in [(0, 1), (3, 2), (5, 3), (8, 4), (9, 5)]]
    clips.append(librivox_wav("0930"))
    batched = encoder.encode(clips, batch_size=4)
    single = np.stack([encoder.encode([c])[0] for c in clips])
    assert batched.shape == (6, 384) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_length_batches_bound_padding_and_cover_every_item():
    lengths = [9000, 4800, 113600, 8000, 47840, 96800, 84800, 52640, 7000, 9100]
    batches = length_batches(lengths, batch_size=3, max_padding=0.2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        sizes = [lengths[i] for i in b]
        assert len(b) <= 3 and (len(b) == 1 or max(sizes) * len(b) <= 1.2 * sum(sizes))
    assert [lengths[b[0]] for b in batches] == sorted(lengths[b[0]] for b in batches)


def test_encode_tokens_masks_exactly_the_frames_of_each_clip(encoder):
    clips = [load_audio(fsdd(d, "lucas", 7)) for d in (2, 4, 6)]
    tokens, mask = encoder.encode_tokens(clips)
    lengths = [n_mel_frames(len(c.samples)) // 2 for c in clips]
    assert tokens.shape == (3, max(lengths), 384) and tokens.dtype == torch.float32
    assert mask.tolist() == [[t < n for t in range(max(lengths))] for n in lengths]
    assert torch.all(tokens[~mask] == 0) and torch.all(tokens[mask].abs().sum(-1) > 0)
    pooled = torch.nn.functional.normalize((tokens.sum(1) / mask.sum(1, keepdim=True)), dim=-1)
    np.testing.assert_allclose(pooled.numpy(), encoder.encode(clips), atol=1e-4)


@pytest.mark.slow
def test_utterance_length_and_30s_padded_encodings_agree_on_the_word(encoder):
    # One speaker; references and queries are different takes of "one" and "seven".
    refs = {d: [fsdd(d, "george", t) for t in (0, 1, 2)] for d in (1, 7)}
    queries = [(d, fsdd(d, "george", t)) for d in (1, 7) for t in (10, 11)]
    clips = [p for _, p in queries] + refs[1] + refs[7]
    n_q = len(queries)
    embeddings = {"utterance": encoder.encode(clips), "padded30": encoder.encode_padded30(clips)}
    predictions = {}
    for label, emb in embeddings.items():
        centroids = {1: emb[n_q:n_q + 3].mean(0), 7: emb[n_q + 3:].mean(0)}
        predictions[label] = [max(centroids, key=lambda d: float(q @ centroids[d])) for q in emb[:n_q]]
    assert predictions["utterance"] == predictions["padded30"] == [d for d, _ in queries]

    a, b = embeddings["utterance"], embeddings["padded30"]
    same = (a * b).sum(1)
    # Mean-pooled Whisper states share a large common direction (raw cosine between
    # *different* clips is ~0.83 too), so also check the agreement after removing it.
    ac, bc = a - a.mean(0), b - b.mean(0)
    ac /= np.linalg.norm(ac, axis=1, keepdims=True)
    bc /= np.linalg.norm(bc, axis=1, keepdims=True)
    centred = ac @ bc.T
    off_diag = centred[~np.eye(len(a), dtype=bool)]
    print(f"\nsame-clip cosine utterance vs padded30: min {same.min():.3f} mean {same.mean():.3f}; "
          f"centred: same {np.diag(centred).mean():.3f} vs different clips {off_diag.mean():.3f}")
    assert same.min() > 0.7
    assert np.diag(centred).mean() > off_diag.mean() + 0.4


def test_weights_id_names_weights_and_preprocessing(encoder):
    wid = encoder.weights_id
    assert wid.startswith("whisper-tiny.en-") and wid == WhisperEncoder(device="cpu").weights_id
    assert (encoder.name, encoder.modality, encoder.dim, encoder.token_dim) == ("whisper-tiny.en", "speech", 384, 384)


def test_audio_longer_than_30s_is_refused(encoder):
    long = Audio(samples=np.zeros(31 * 16000, dtype=np.float32), source="31 s of silence")
    with pytest.raises(AudioError, match="30 s"):
        encoder.encode([long])


# ----------------------------------------------------------------- ASR


def test_word_error_rate_counts_edits_over_reference_words():
    assert normalize_words("Mr. Dashwood's ill-disposed, son!") == ["mister", "dashwood's", "ill", "disposed", "son"]
    assert edit_distance("a b c d".split(), "a x c".split()) == 2
    # 1 substitution + 1 deletion over 4 words, and 1 insertion over 2 words -> 3 / 6.
    assert word_error_rate(["a b c d", "e f"], ["a x c", "e f g"]) == pytest.approx(0.5)


@pytest.mark.slow
def test_transcribes_librivox_sentences_within_15_percent_wer(encoder):
    pairs = librivox_pairs()
    assert len(pairs) == 5
    hyps = WhisperTranscriber(device="cpu").transcribe([p for p, _ in pairs])
    wer = word_error_rate([r for _, r in pairs], hyps)
    print("\n" + "\n".join(hyps) + f"\nWER {wer:.3f}")
    assert wer <= 0.15
