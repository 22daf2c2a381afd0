"Gap metrics against hand computations and on synthetic two-cone data."
import numpy as np
import pytest

from unicorn.gap import (gap_vector, paired_cosine, retrieval_at_k, cross_modal_retrieval, modality_separability,
                         transfer_table, cluster_gap_table, centre_by_cluster, apply_gap_shift, gap_shift_for,
                         shifted_gap, trace_ratio, residual_subspace_angles, gap_shape)
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


def _two_cones(seed=0, n=400, d=24, off=0.3):
    "Paired unit vectors sharing content in a cone around e0, image and text offset by ±off along e1 (a small gap)."
    r = np.random.default_rng(seed); c = r.normal(size=(n, d)) + 3 * np.eye(d)[0]
    return (l2norm(c + off * np.eye(d)[1] + .2 * r.normal(size=(n, d))),
            l2norm(c - off * np.eye(d)[1] + .2 * r.normal(size=(n, d))))


def test_apply_gap_shift_is_mind_the_gap_formula():
    x = np.array([[1., 0.], [0., 1.]]); d = np.array([.5, -.5])
    np.testing.assert_allclose(apply_gap_shift(x, "image", d, 2.0), l2norm(x - 2 * d))      # Norm(x - λΔ)
    np.testing.assert_allclose(apply_gap_shift(x, "text", d, 2.0), l2norm(x + 2 * d))       # Norm(y + λΔ)
    np.testing.assert_allclose(apply_gap_shift(3 * x, "text", d, 0.0), x)                   # λ = 0: identity (normalised)
    assert apply_gap_shift(x.astype(np.float32), "image", d, 1.0).dtype == np.float32
    with pytest.raises(ValueError, match="modality"): apply_gap_shift(x, "video", d, 1.0)


@pytest.mark.parametrize("target", [0.01, 0.1, 0.5, 0.82, 1.0, 1.5])
def test_gap_shift_for_reaches_target(target):
    img, txt = _two_cones()
    d, lam = gap_shift_for(img, txt, target)
    np.testing.assert_allclose(d, gap_vector(img, txt))
    g0 = np.linalg.norm(d)
    assert (lam < 0) == (target > g0)                                                      # λ < 0 widens
    si, st = apply_gap_shift(img, "image", d, lam), apply_gap_shift(txt, "text", d, lam)
    assert abs(np.linalg.norm(gap_vector(si, st)) - target) < 1e-3
    np.testing.assert_allclose(np.linalg.norm(si, axis=1), 1, atol=1e-9)


def test_gap_shift_for_native_and_limits():
    img, txt = _two_cones(1)
    g0 = np.linalg.norm(gap_vector(img, txt))
    assert gap_shift_for(img, txt, g0)[1] == 0.0
    np.testing.assert_allclose(shifted_gap(img, txt, gap_vector(img, txt), 0.0), gap_vector(img, txt))
    with pytest.warns(UserWarning, match="smallest reachable gap"):                         # exactly 0 is not reachable
        d, lam = gap_shift_for(img, txt, 0.0)
    assert np.linalg.norm(shifted_gap(img, txt, d, lam)) < 0.01
    with pytest.raises(ValueError, match=r"in \[0, 2\)"): gap_shift_for(img, txt, 2.5)
    with pytest.raises(ValueError, match="same centre"): gap_shift_for(img, img, 0.5)


def test_gap_does_not_import_encoders():
    "Issue 25: no encoders <-> gap import cycle (gap.py imports neither at module level nor inside a function)."
    import ast, unicorn.gap
    tree = ast.parse(open(unicorn.gap.__file__).read())
    mods = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
           [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert mods and not [m for m in mods if "encoders" in m]


def test_trace_ratio_hand_and_invariances():
    img = np.array([[1., 0.], [0., 1.]])
    txt = np.array([[1., 0.], [.6, .8]])
    assert trace_ratio(img, txt) == pytest.approx(0.5 / 0.2)
    assert trace_ratio(3 * img, txt) == pytest.approx(2.5)                              # rows are normalised first
    r = np.random.default_rng(0)
    x = r.normal(size=(50, 8))
    assert trace_ratio(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(r.normal(size=(8, 8)))
    assert trace_ratio(x @ q, x) == pytest.approx(1.0)                                  # a rotation keeps the spread
    with pytest.raises(ValueError, match="zero variance"): trace_ratio(x, np.ones((4, 8)))
    with pytest.raises(ValueError, match=r"\[n, d\]"): trace_ratio(x, np.ones((4, 5)))


def test_residual_subspace_angles_known_geometry():
    r = np.random.default_rng(1)
    e = np.eye(6)
    a = 5 * e[5] + r.normal(size=(300, 1)) * e[0] + r.normal(size=(300, 1)) * e[1]
    b = 5 * e[4] + r.normal(size=(300, 1)) * e[0] + r.normal(size=(300, 1)) * e[2]
    ang = residual_subspace_angles(a, b, k=2)
    assert ang[0] < 10 and ang[1] > 80 and (np.diff(ang) >= 0).all()
    np.testing.assert_allclose(residual_subspace_angles(a, a, k=2), 0, atol=1e-4)
    with pytest.raises(ValueError, match="image embeddings have rank 3"):     # 2 axes + the normalisation's
        residual_subspace_angles(a, b, k=4)
    with pytest.raises(ValueError, match="rank"): residual_subspace_angles(a, b, k=0)


def test_gap_shape_one_vector_vs_per_class():
    r = np.random.default_rng(2)
    lab, c = np.arange(400) % 4, r.normal(size=(4, 16))
    txt = l2norm(c[lab] + .3 * r.normal(size=(400, 16)))
    one = gap_shape(l2norm(c[lab] + .3 * r.normal(size=(400, 16)) + 2 * np.eye(16)[0]), txt, lab, k=3)
    per = gap_shape(l2norm(c[lab] + .3 * r.normal(size=(400, 16)) + 2 * np.eye(16)[lab + 1]), txt, lab, k=3)
    assert one["classes"] == per["classes"] == 4
    assert one["class_cos_min"] > .9 and per["class_cos_min"] < one["class_cos_min"] - .2   # per-class offsets differ
    assert one["gap_norm"] == pytest.approx(np.linalg.norm(gap_vector(
        l2norm(c[lab] + .3 * r.normal(size=(400, 16)) + 2 * np.eye(16)[0]), txt)), abs=.1)
