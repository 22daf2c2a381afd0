"Domains under bad input (issue 26, item 7): image counts are checked by name, a missing font is named."
import numpy as np
import pytest

from unicorn.domains import _font, _word_image, load_domain, load_domains


@pytest.mark.parametrize("name", ["shapes", "digits", "words", "counting"])
@pytest.mark.parametrize("field, value", [("n_train", -1), ("n_train", -5), ("n_test", 0), ("n_test", -1),
                                          ("n_train", 2.5), ("n_test", "12"), ("n_train", True), ("n_test", None)])
def test_image_counts_must_be_whole_numbers(name, field, value):
    "Negative counts used to take most of a class (`idx[:-5]`); 0 test images gave an empty test split silently."
    kw = {"n_train": 24, "n_test": 12, field: value}
    least = 1 if field == "n_test" else 0
    with pytest.raises(ValueError, match=rf"domain '{name}': {field} = {value!r} must be a whole number of images, "
                                         rf"at least {least}"):
        load_domain(name, **kw)


@pytest.mark.parametrize("name", ["shapes", "digits", "words", "counting"])
def test_no_train_images_is_a_test_only_domain(name):
    "n_train = 0 (every domain; shapes used to crash stacking nothing) gives exactly the test images."
    t, X = load_domain(name, 0, 3)
    assert len(t) == len(X) == 3 and set(t.split) == {"test"}


def test_small_counts_still_give_train_and_test_images():
    t, X = load_domains(("words", "counting"), n_train=1, n_test=1)
    assert len(t) == len(X) and set(t.split) == {"train", "test"}
    assert t.groupby(["domain", "split"]).size().to_dict() == {("counting", "test"): 1, ("counting", "train"): 1,
                                                               ("words", "test"): 1, ("words", "train"): 1}
    t, _ = load_domain("digits", np.int64(10), np.int64(10))          # numpy whole numbers are whole numbers
    assert (t.split == "test").sum() == 10


def test_a_missing_font_is_named(monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"font 'NoSuchFont\.ttf' cannot be opened at .*NoSuchFont\.ttf"):
        _font("NoSuchFont.ttf", 12)
    import unicorn.domains as d
    monkeypatch.setattr(d, "FONTS", ("Gone.ttf",))
    with pytest.raises(FileNotFoundError, match="font 'Gone.ttf'"): _word_image("cat", np.random.default_rng(0))
