"""Template lists, class embeddings, zero-shot classification and template robustness."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xmodal_core.errors import InputError
from xmodal_core.zeroshot import (
    available_templates,
    class_embeddings,
    classify,
    load_templates,
    parse_templates,
    template_robustness,
)


class WordEncoder:
    """A deterministic text encoder: the sum of a fixed random vector per word (not normalised)."""

    def __init__(self, dim: int = 16, seed: int = 0):
        self.dim, self.seed, self.calls = dim, seed, []
        self.vocab: dict[str, np.ndarray] = {}

    def word(self, w: str) -> np.ndarray:
        if w not in self.vocab:
            rng = np.random.default_rng([self.seed, *map(ord, w)])
            self.vocab[w] = rng.standard_normal(self.dim)
        return self.vocab[w]

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([sum(self.word(w) for w in t.lower().split()) for t in texts]).astype(np.float32)


def unit_list(v) -> list[float]:
    v = [float(x) for x in v]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


# --- template lists ------------------------------------------------------------------------


def test_shipped_lists_load_by_name():
    simple, general = load_templates("simple"), load_templates("general")
    assert len(simple) == 10 and simple[0] == "a photo of a {}"
    assert len(general) == 48 and general[0] == "it is about {}"
    assert {"simple", "general"} <= set(available_templates())


def test_name_colon_k_takes_the_first_k():
    assert load_templates("simple:5") == load_templates("simple")[:5]
    with pytest.raises(InputError, match="only 10"):
        load_templates("simple:11")
    with pytest.raises(InputError, match="at least 1"):
        load_templates("simple:0")


def test_files_and_lists_are_accepted(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my list\nsaying {}\n\n  a {} sound  \n")
    assert load_templates(path) == ["saying {}", "a {} sound"]
    assert load_templates(str(path)) == ["saying {}", "a {} sound"]
    assert load_templates(["x {}", "y {}"]) == ["x {}", "y {}"]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError, match="general.*simple"):
        load_templates("nonexistent")


def test_templates_with_zero_or_two_holes_are_flagged_with_their_line_numbers():
    text = "a photo of a {}\n\n# a comment with {} {}\nno hole here\nthe {} and the {}\nfine {}\n"
    with pytest.raises(InputError) as err:
        parse_templates(text)
    message = str(err.value)
    assert "line 4 has 0" in message and "line 5 has 2" in message
    assert "line 1" not in message and "line 3" not in message and "line 6" not in message


def test_an_empty_list_is_an_error():
    with pytest.raises(InputError, match="no templates"):
        parse_templates("\n  \n# only a comment\n")
    with pytest.raises(InputError, match="no templates"):
        parse_templates([])


def test_other_braces_are_kept_as_text():
    assert parse_templates("a {} (see {ref})") == ["a {} (see {ref})"]


# --- class embeddings and classification ---------------------------------------------------


def test_class_embeddings_are_renormalised_means_of_normalised_template_embeddings():
    enc = WordEncoder()
    classes, templates = ["cat", "sea lion"], ["a photo of a {}", "{} sounds", "it is about {}"]
    got = class_embeddings(classes, templates, enc)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == 6  # every string in one call
    assert got.shape == (2, 16)
    for c, name in enumerate(classes):
        filled = [unit_list(enc([t.replace("{}", name)])[0]) for t in templates]
        mean = [sum(col) / len(filled) for col in zip(*filled)]
        np.testing.assert_allclose(got[c].numpy(), unit_list(mean), atol=1e-6)


def test_class_embeddings_accept_an_encoder_returning_tensors():
    enc = WordEncoder()
    as_tensor = class_embeddings(["dog"], ["a {}"], lambda texts: torch.from_numpy(enc(texts)))
    as_numpy = class_embeddings(["dog"], ["a {}"], enc)
    torch.testing.assert_close(as_tensor, as_numpy)


def test_class_embeddings_check_the_encoder_output():
    with pytest.raises(InputError, match="expected"):
        class_embeddings(["a", "b"], ["{}"], lambda texts: np.zeros((1, 4)))


def test_classify_gives_cosine_logits():
    items = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logits = classify(items, classes)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(logits, torch.tensor([[1.0, 0.0], [s, s]]))


def test_template_robustness_equals_classifying_with_the_first_k_templates():
    enc = WordEncoder(dim=32)
    classes = ["cat", "dog", "bird", "fish", "horse", "cow"]
    templates = load_templates("simple")
    rng = np.random.default_rng(1)
    labels = torch.tensor(rng.integers(0, len(classes), 60))
    items = torch.from_numpy(np.stack([enc.word(classes[i]) for i in labels.tolist()])).float()
    items = items + 1.5 * torch.from_numpy(rng.standard_normal(items.shape)).float()

    got = template_robustness(items, labels, classes, templates, enc, ks=(1, 5, 10, 20))
    assert list(got) == [1, 5, 10]  # 20 > 10 templates: skipped
    assert len(enc.calls) == 1  # each string encoded once
    for k, acc in got.items():
        logits = classify(items, class_embeddings(classes, templates[:k], WordEncoder(dim=32)))
        ranked = logits.argsort(dim=1, descending=True)
        top1 = sum(int(ranked[i, 0] == labels[i]) for i in range(60)) / 60
        top5 = sum(int(labels[i] in ranked[i, :5].tolist()) for i in range(60)) / 60
        assert acc == {"top1": pytest.approx(top1), "top5": pytest.approx(top5)}
