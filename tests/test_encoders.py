"""Towers load offline from their packages and behave like the models they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal_core.errors import InputError, ModelNotFoundError
from xmodal_core.registry import REGISTERED, get_encoder

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def effnet():
    return get_encoder("efficientnet-lite0", device="cpu")


def test_minilm_puts_dog_nearer_puppy_than_stock_market(minilm):
    dog, puppy, stocks = minilm.encode([
        "A dog is running across the park.",
        "A puppy plays on the grass.",
        "The stock market fell sharply today.",
    ])
    assert float(dog @ puppy) > float(dog @ stocks) + 0.2


def test_encoder_contract_unit_rows_float32_and_tokens(minilm):
    emb = minilm.encode(["one", "two words", "three little words"], batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    tokens, mask = minilm.encode_tokens(["one", "three little words"])
    assert tokens.shape[0] == 2 and tokens.shape[2] == minilm.token_dim
    assert mask.sum(1)[0] < mask.sum(1)[1]  # the longer text has more tokens
    assert torch.all(tokens[0][~mask[0]] == 0)


def test_minilm_refuses_empty_text(minilm):
    with pytest.raises(InputError, match="empty"):
        minilm.encode(["fine", "   "])


def test_efficientnet_classifies_real_cat_photo_as_a_cat(effnet, chelsea_png):
    logits = effnet.classify_imagenet([Image.open(chelsea_png)])
    top1 = int(logits.argmax())
    assert 281 <= top1 <= 285, f"ImageNet class {top1} is not a cat class"


def test_efficientnet_embeddings_and_patch_tokens(effnet, chelsea_png):
    cat = Image.open(chelsea_png).convert("RGB")
    flipped = cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 451, 3), dtype=np.uint8))
    emb = effnet.encode([cat, flipped, noise])
    assert emb.shape == (3, 1280)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]  # a mirrored cat is closer than noise
    tokens, mask = effnet.encode_tokens([cat])
    assert tokens.shape == (1, 49, 1280) and bool(mask.all())


def test_registry_lists_the_three_towers():
    assert {"minilm", "whisper-tiny.en", "efficientnet-lite0"} <= set(REGISTERED)
    assert REGISTERED["minilm"].dim == 384 and REGISTERED["efficientnet-lite0"].dim == 1280


def test_unknown_model_error_lists_what_was_tried():
    with pytest.raises(ModelNotFoundError) as info:
        get_encoder("no-such-model")
    message = str(info.value)
    assert "minilm" in message and "local folder" in message


def test_uncached_hub_id_fails_offline_with_advice():
    with pytest.raises(ModelNotFoundError, match="Hugging Face cache"):
        get_encoder("sentence-transformers/definitely-not-cached-model")


def test_local_sentence_transformers_folder_is_accepted(minilm):
    enc = get_encoder(str(minilm.path))
    assert enc.dim == 384
    assert np.allclose(enc.encode(["hello"]), minilm.encode(["hello"]), atol=1e-5)


def test_open_clip_random_tiny_config_and_missing_checkpoint(chelsea_png):
    import open_clip

    open_clip.add_model_config(ASSETS / "xmodal-tiny.json")
    img = get_encoder("open_clip:xmodal-tiny:image:random")
    txt = get_encoder("open_clip:xmodal-tiny:text:random")
    assert img.encode([chelsea_png]).shape == (1, 32)
    assert txt.encode(["a cat"]).shape == (1, 32)
    with pytest.raises(ModelNotFoundError, match="no checkpoint"):
        get_encoder("open_clip:xmodal-tiny:image")
    with pytest.raises(ModelNotFoundError, match="local file"):
        get_encoder("open_clip:RN50:image:openai-but-not-a-tag")


RACE = """
import threading
from xmodal_core.encoders import whisper
from xmodal_core.encoders.text import SentenceTransformerEncoder, minilm_path

start, errors = threading.Barrier(2), []

def run(fn):
    start.wait()
    try:
        fn()
    except Exception as exc:
        errors.append(repr(exc))

jobs = [lambda: SentenceTransformerEncoder(minilm_path(), "minilm", device="cpu"),
        lambda: whisper.load_whisper_tiny_en("cpu")]
threads = [threading.Thread(target=run, args=(fn,)) for fn in jobs]
[t.start() for t in threads]
[t.join() for t in threads]
print("errors:", errors)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_minilm_and_whisper_load_at_once_in_a_fresh_process(attempt):
    """The app's warm-up loads MiniLM while a request may load Whisper; transformers' lazy names
    raced ("cannot import name 'WhisperFeatureExtractor'", 3 times in 4 before HF_LOCK)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", RACE], cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "errors: []" in done.stdout, done.stdout + done.stderr[-2000:]
