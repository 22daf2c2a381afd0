"Gap metrics against hand computations and on synthetic two-cone data."
import numpy as np
import pytest

from unicorn.gap import (gap_vector, paired_cosine, retrieval_at_k, cross_modal_retrieval, modality_separability,
                         transfer_table, cluster_gap_table, centre_by_cluster)
from unicorn.transfer import l2norm


def test_hand_values():
    v = np.array([[1., 0.], [.8, .6]]); t = np.array([[0., 1.], [.6, .8]])
    np.testing.assert_allclose(gap_vector(v, t), [.6, -.6])
    assert paired_cosine(v, t) == pytest.approx(.48)
    assert cross_modal_retrieval(v, t, ks=(1,)) == {"i2t_R@1": .5, "t2i_R@1": .5}
    assert retrieval_at_k(v, v)["R@1"] == 1.0


def test_separability_and_transfer_closes_the_gap():
    r = np.random.default_rng(0)
    lab = r.integers(0, 5, 300); c = r.normal(size=(5, 32))
    img = l2norm(c[lab] + .4 * r.normal(size=(300, 32)) + 3 * np.eye(32)[0])
    txt = l2norm(c[lab] + .4 * r.normal(size=(300, 32)) + 3 * np.eye(32)[1])
    assert modality_separability(img, txt) > .95
    tab = transfer_table(img, txt, txt.mean(0), img.mean(0), labels=lab).set_index(["method", "images"])
    assert tab.loc[("unicorn_paper", "prepared"), "gap_norm"] < .1 * tab.loc[("none", "raw"), "gap_norm"]
    assert tab.loc[("unicorn_paper", "prepared"), "separability"] < .75
    assert tab.loc[("oracle", "raw"), "separability"] < .75
    assert tab.loc[("capdec", "raw"), "gap_norm"] > .5 * tab.loc[("none", "raw"), "gap_norm"]   # noise alone does not move the centre


def test_cluster_gaps():
    img = np.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]]); txt = np.array([[0., 1.]] * 4)
    t = cluster_gap_table(img, txt, ["a", "a", "b", "b"])
    assert t.gap_norm.tolist() == pytest.approx([np.sqrt(2), 0.])
    np.testing.assert_allclose(centre_by_cluster(np.array([[2., 0.], [4., 0.]]), [0, 0]), [[-1, 0], [1, 0]])


def test_shape_mismatch_refused():
    with pytest.raises(ValueError, match="equal"): paired_cosine(np.ones((2, 3)), np.ones((3, 3)))
