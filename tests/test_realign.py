"""ReAlign (arXiv 2602.07026) in `unicorn.transfer`: anchor, trace, centroid from an unpaired image pool, streamed over
shards. The comparison with the authors' own script on the same arrays is in papers/realign.md."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as hs
from hypothesis.extra import numpy as hnp

from unicorn.runs import EmbeddingShards, ShardError
from unicorn.transfer import (l2norm, realign_stats, shift_oracle, shift_realign, streaming_trace, transfer_realign)


def _cones(seed: int, n_text: int = 60, n_img: int = 50, d: int = 12, spread: tuple = (0.3, 0.6)):
    "A text cone around e0 and an image pool around e1 (unit rows), with the given spreads."
    r = np.random.default_rng(seed)
    txt = l2norm(r.normal(size=(n_text, d)) * spread[0] + 2 * np.eye(d)[0]).astype(np.float64)
    img = l2norm(r.normal(size=(n_img, d)) * spread[1] + 2 * np.eye(d)[1]).astype(np.float64)
    return txt, img


rows = hnp.arrays(np.float64, hs.tuples(hs.integers(3, 20), hs.just(6)),
                  elements=hs.floats(-5, 5, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(rows, rows)
def test_output_rows_are_unit_norm(txt, img):
    if min(np.linalg.norm(txt, axis=1).min(), np.linalg.norm(img, axis=1).min()) < 1e-3: return   # a zero row
    if np.ptp(l2norm(txt), axis=0).max() < 1e-6: return                 # identical text rows: refused (tested below)
    out = shift_realign(txt, realign_stats([txt], [img]))
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(norms[norms > 1e-3] - 1) < 1e-5)                # unit rows (a row cancelled to 0 stays 0)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_equal_traces_reduce_to_the_anchor_shift(txt):
    "An image pool with the text's spread (its mirror image, moved): scale 1, and anchor + trace = the anchor shift."
    if np.linalg.norm(txt, axis=1).min() < 1e-3 or np.ptp(l2norm(txt), axis=0).max() < 1e-6: return
    pool = -l2norm(txt)                                                 # the same spread around another centre
    st = realign_stats([txt], [pool])
    assert st["scale"] == pytest.approx(1.0, abs=1e-9)
    anchor = shift_oracle(l2norm(txt), st["mu_t"], st["mu_i"])
    np.testing.assert_allclose(shift_realign(txt, {**st, "mu_hat": None}), anchor, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(hs.lists(hs.integers(2, 30), min_size=1, max_size=5), hs.integers(0, 1000))
def test_statistics_do_not_depend_on_how_the_rows_are_sharded(sizes, seed):
    txt, img = _cones(seed, n_text=sum(sizes))
    cuts = np.cumsum(sizes)[:-1]
    a, b = realign_stats(np.split(txt, cuts), [img]), realign_stats([txt], np.split(img, [len(img) // 2]))
    for k in ("mu_t", "mu_i", "mu_hat"): np.testing.assert_allclose(a[k], b[k], atol=1e-12)
    for k in ("trace_text", "trace_image", "scale"): assert a[k] == pytest.approx(b[k], rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_centroid_puts_the_mean_on_the_pool_direction(seed):
    txt, img = _cones(seed)
    st = realign_stats([txt], [img])
    first = shift_realign(txt, {**st, "mu_hat": None}).astype(np.float64)
    np.testing.assert_allclose(first.mean(0), st["mu_hat"], atol=1e-6)            # μ̂ is the mean after anchor + trace
    np.testing.assert_allclose((first - st["mu_hat"] + st["mu_i"]).mean(0), st["mu_i"], atol=1e-6)   # before Norm
    cos = lambda x: float(l2norm(x.mean(0)) @ l2norm(st["mu_i"]))
    out = shift_realign(txt, st).astype(np.float64)
    assert cos(out) > 0.999 and cos(out) >= cos(first) - 1e-9


def test_trace_scales_the_residual_spread():
    "After anchor + trace (before the renormalisation), the text rows' spread is the pool's."
    txt, img = _cones(1)
    st = realign_stats([txt], [img])
    moved = (txt - st["mu_t"]) * st["scale"] + st["mu_i"]
    assert ((moved - moved.mean(0)) ** 2).sum(1).mean() == pytest.approx(st["trace_image"], rel=1e-9)
    assert streaming_trace([img[:10], img[10:]], st["mu_i"]) == pytest.approx(st["trace_image"], rel=1e-12)


def test_streamed_over_shards_equals_in_memory_and_resumes(tmp_path):
    txt, img = _cones(2, n_text=70)
    src, pool = EmbeddingShards(tmp_path / "text"), EmbeddingShards(tmp_path / "pool")
    for k, sl in enumerate((slice(0, 30), slice(30, 70))):
        src.write(k, ([f"t{i}" for i in range(sl.start, sl.stop)], txt[sl]))
    pool.write(0, ([f"u{i}" for i in range(len(img))], img))
    dst = EmbeddingShards(tmp_path / "out")
    c = transfer_realign(src, dst, pool, progress=False)
    assert (c["shards"], c["written"], c["rows"]) == (2, 2, 70)
    st16 = realign_stats([src.load_all().emb.astype(np.float64)], [pool.load_all().emb.astype(np.float64)])
    want = shift_realign(src.load_all().emb, st16)
    np.testing.assert_allclose(dst.load_all().emb.astype(np.float32), want, atol=2e-3)
    assert dst.load_all().ids == [f"t{i}" for i in range(70)]
    before = dst.read(1).emb.copy()
    dst.path(1).unlink()
    c = transfer_realign(src, dst, pool, progress=False)
    assert (c["written"], c["resumed"]) == (1, 1)
    np.testing.assert_array_equal(dst.read(1).emb, before)


def test_bad_input_is_named(tmp_path):
    txt, img = _cones(3)
    with pytest.raises(ShardError, match="dimension 5, the text 12"): realign_stats([txt], [np.ones((3, 5))])
    with pytest.raises(ValueError, match="not an iterator"): realign_stats(iter([txt]), [img])
    with pytest.raises(ShardError, match="no embedding shards"):
        realign_stats(EmbeddingShards(tmp_path / "none"), [img])
    with pytest.raises(ShardError, match="non-finite"): realign_stats([txt], [np.full((2, 12), np.nan)])
    with pytest.raises(ValueError, match="tr Σ_T = 0"): realign_stats([np.tile(txt[:1], (5, 1))], [img])
