"The image domains of `unicorn.domains`: what is drawn is what the ground truth says, splits are stratified, shifts centre."
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy import ndimage

from unicorn.domain_study import ArrayIndex, condition_embeddings, domain_shift
from unicorn.domains import (DOMAINS, NUMBER_WORDS, _dots_image, _split, _word_image, caption_texts, domain_questions,
                             load_domain)


@pytest.mark.parametrize("n", range(1, 7))
def test_counting_images_hold_exactly_the_counted_dots(n):
    "Every rendered counting image has exactly `n` separate dots (connected ink components), whatever the draw."
    rng = np.random.default_rng(n)
    for _ in range(20):
        im = _dots_image(n, rng).astype(int)
        ink = np.abs(im - im[0, 0]).sum(2) > 30                  # the corner is background: dots never reach it
        assert ndimage.label(ink)[1] == n


def test_rendered_words_are_inside_the_image_and_differ_by_word():
    "Each word is drawn whole (no ink on the border) and two words never render to the same pixels."
    rng = np.random.default_rng(0)
    ims = {w: _word_image(w, rng) for w in DOMAINS["words"]["ocr"][1]}
    for w, im in ims.items():
        bg = im[0, 0].astype(int); ink = np.abs(im.astype(int) - bg).sum(2) > 60
        assert ink.sum() > 30, w                                  # something was written
        assert not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any()), w
    assert len({im.tobytes() for im in ims.values()}) == len(ims)


def test_digits_are_sklearn_scans_with_their_own_labels():
    "The digits domain's images are scikit-learn's scans: the 8×8 scan, shrunk back, correlates with its source."
    from sklearn.datasets import load_digits
    t, X = load_domain("digits", 40, 20, seed=0)
    d = load_digits()
    assert set(t.digit) == set("0123456789") and (t.label == t.digit).all()
    ink = 255 - X[..., 0].astype(float)                           # dark ink on light paper
    means = {k: d.images[d.target == k].mean(0).ravel() for k in range(10)}
    from PIL import Image
    hits = 0
    for im, y in zip(ink, t.digit.astype(int)):
        box = np.argwhere(im > 20); (a, b), (c, e) = box.min(0), box.max(0) + 1
        small = np.asarray(Image.fromarray(im[a:c, b:e].astype(np.uint8)).resize((8, 8), Image.BILINEAR), float).ravel()
        hits += max(means, key=lambda k: np.corrcoef(small, means[k])[0, 1]) == y
    assert hits / len(t) > 0.7          # nearest class mean of the source scans recovers the label for most images


def _label_names(domain: str, label: str) -> list[tuple]:
    "The words that may name each part of `label` in a caption (digits and counts: the numeral or its word)."
    if domain in ("digits", "counting"): return [(label, NUMBER_WORDS[int(label)])]
    return [(w,) for w in label.split(" ")]


def _mentions(caption: str, names) -> bool:
    "Whether `caption` holds one of `names` as a whole word."
    return any(re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", caption) for n in names)


def test_every_domain_has_answers_among_its_candidates():
    "Each question's answer is one of its type's candidates; every caption names its label and no other label."
    for name in DOMAINS:
        t, X = load_domain(name, 24, 12, seed=1)
        assert X.shape == (36, 64, 64, 3) and X.dtype == np.uint8
        q = domain_questions(t, "test")
        for qtype, g in q.groupby("qtype"):
            assert set(g.answer) <= set(DOMAINS[name][qtype][1]), (name, qtype)
        labels = t.label.unique()
        for label in labels:
            own = _label_names(name, label)
            others = {n for o in labels for n in _label_names(name, o) if n not in own}
            for c in caption_texts(name, label):
                assert all(_mentions(c, names) for names in own), (name, label, c)
                assert not any(_mentions(c, names) for names in others), (name, label, c)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcd"), min_size=4, max_size=60), st.integers(0, 20), st.integers(0, 20), st.integers(0, 99))
def test_split_is_stratified_or_refuses(labels, n_train, n_test, seed):
    "`_split` gives each label ⌊n/k⌋ or ⌈n/k⌉ items per split, never reuses an item, or says which label is short."
    try: s = _split(labels, n_train, n_test, seed)
    except ValueError as e:
        assert "items, fewer than the" in str(e); return
    labels = np.asarray(labels); k = len(set(labels.tolist()))
    assert (s == "train").sum() == n_train and (s == "test").sum() == n_test
    for c in set(labels.tolist()):
        for part, n in (("train", n_train), ("test", n_test)):
            assert ((labels == c) & (s == part)).sum() in (n // k, n // k + 1)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 40), st.integers(1, 6), st.integers(0, 999))
def test_shifts_centre_globally_or_per_domain(n, d, seed):
    "`unicorn_code` leaves a zero mean, `unicorn_per_domain` a zero mean in every domain; test images get the same."
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 3
    dom = rng.choice(["a", "b", "c"], size=n)
    assert np.allclose(domain_shift(x, dom, "unicorn_code").mean(0), 0, atol=1e-5)
    per = domain_shift(x, dom, "unicorn_per_domain")
    for c in set(dom): assert np.allclose(per[dom == c].mean(0), 0, atol=1e-5)
    t = pd.DataFrame({"id": [f"i{k}" for k in range(2 * n)], "domain": np.tile(dom, 2),
                      "split": ["train"] * n + ["test"] * n})
    tr, te = condition_embeddings("unicorn_per_domain", {"text_train": x, "image_train": x, "image_test": x}, t)
    assert np.array_equal(tr.get_many(t.id[:n]), per) and np.array_equal(te.get_many(t.id[n:]), per)


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=10))
def test_array_index_finds_each_id_or_refuses_duplicates(ids):
    "Any ids: each looks up its own row, or duplicate ids are refused with the counts."
    m = np.arange(len(ids) * 2, dtype=np.float32).reshape(len(ids), 2)
    if len(set(ids)) < len(ids):
        with pytest.raises(ValueError, match="distinct ids for"): ArrayIndex(ids, m)
        return
    ix = ArrayIndex(ids, m)
    assert all(np.array_equal(ix[i], m[n]) for n, i in enumerate(ids)) and np.array_equal(ix.get_many(ids[::-1]), m[::-1])


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(["words", "counting", "digits"]), st.integers(0, 90), st.integers(1, 40))
def test_any_split_size_gives_exactly_that_many_images(name, n_train, n_test):
    "A rendered or scanned domain returns exactly `n_train` + `n_test` images, every label within one of the others."
    t, X = load_domain(name, n_train, n_test, seed=0)
    assert len(t) == len(X) == n_train + n_test
    assert (t.split == "train").sum() == n_train
    sizes = t[t.split == "test"].label.value_counts()
    assert sizes.max() - sizes.min() <= 1
