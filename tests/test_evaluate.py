"""xmodal_core.evaluate on real MiniLM embeddings, against accuracies and recalls computed by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xmodal_core import evaluate
from xmodal_core.errors import InputError

CLASSES = ["dog", "car", "apple"]
# items: (text, label, group); the last one is a deliberate miss for a bare "{}" template
ITEMS = [("a puppy barking", "dog", "ann"), ("a small terrier", "dog", "bob"), ("a red sports car", "car", "ann"),
         ("a truck on the road", "car", "bob"), ("a green fruit from a tree", "apple", "ann"),
         ("a vehicle with four wheels", "dog", "bob")]


@pytest.fixture(scope="module")
def minilm():
    from xmodal_core.registry import get_encoder

    return get_encoder("minilm")


def test_zeroshot_matches_argmax_cosine_computed_by_hand(minilm):
    emb = minilm.encode([t for t, _, _ in ITEMS])
    result = evaluate.zeroshot(emb, [label for _, label, _ in ITEMS], CLASSES, ["{}"], minilm.encode,
                               groups=[g for _, _, g in ITEMS])
    classes = minilm.encode(CLASSES)  # one template "{}": the class embedding is the word's own
    predicted = np.argmax(emb @ classes.T, axis=1)
    labels = np.array([CLASSES.index(label) for _, label, _ in ITEMS])
    correct = predicted == labels
    assert result.n == 6 and result.predictions == predicted.tolist()
    assert result.top1 == pytest.approx(correct.mean())
    assert result.top5 == 1.0  # 3 classes: every label is in the top 3
    assert result.per_group == pytest.approx({g: correct[[i for i, it in enumerate(ITEMS) if it[2] == g]].mean()
                                              for g in ("ann", "bob")})
    assert result.per_class["dog"] == pytest.approx(correct[labels == 0].mean())
    confusion = np.zeros((3, 3), dtype=int)
    for t, p in zip(labels, predicted):
        confusion[t, p] += 1
    assert result.confusion == confusion.tolist()
    assert result.top1_without(["bob"]) == pytest.approx(correct[[0, 2, 4]].mean())
    assert json.loads(json.dumps(result.to_dict()))["top1"] == result.top1


def test_template_curve_at_k_equals_zeroshot_with_the_first_k_templates(minilm):
    emb = minilm.encode([t for t, _, _ in ITEMS])
    labels = [label for _, label, _ in ITEMS]
    templates = ["a photo of a {}", "{}", "something about a {}"]
    curve = evaluate.template_curve(emb, labels, CLASSES, templates, minilm.encode)
    assert curve.ks == [1, 2, 3]
    for k in curve.ks:
        assert curve.at(k) == pytest.approx(evaluate.zeroshot(emb, labels, CLASSES, templates[:k], minilm.encode).top1)


def test_retrieval_recall_counts_queries_with_a_positive_in_the_top_k(minilm):
    queries = minilm.encode(["a dog", "a car", "an apple"])
    gallery = minilm.encode(["a puppy", "a kitten", "an automobile", "a pear", "a red apple"])
    groups_q, groups_g = ["dog", "car", "apple"], ["dog", "cat", "car", "pear", "apple"]
    positives = evaluate.group_positives(groups_q, groups_g)
    assert positives.tolist() == [[g == q for g in groups_g] for q in groups_q]
    result = evaluate.retrieval(queries, gallery, positives, ks=(1, 2))
    order = np.argsort(-(queries @ gallery.T), axis=1)
    target = [0, 2, 4]
    for k in (1, 2):
        assert result.recall[k] == pytest.approx(np.mean([target[i] in order[i, :k] for i in range(3)]))
    assert result.metrics("t_") == {"t_r@1": result.recall[1], "t_r@2": result.recall[2]}
    assert (result.queries, result.gallery) == (3, 5)


def test_classification_of_given_predictions_and_bad_inputs():
    result = evaluate.classification(["dog", "car", "car"], ["dog", "dog", "car"], CLASSES, groups=["a", "b", "b"])
    assert result.top1 == pytest.approx(2 / 3) and result.top5 is None
    assert result.per_group == {"a": 1.0, "b": 0.5} and result.confusion[0] == [1, 1, 0]
    with pytest.raises(InputError, match="not among the classes"):
        evaluate.classification(["pear"], ["dog"], CLASSES)
    with pytest.raises(InputError, match="at least two classes"):
        evaluate.zeroshot(torch.ones(1, 4), [0], ["only"], class_emb=torch.ones(1, 4))
