"Transfer formulas against hand computations, the streaming mean, refusal of bad shards, resume, and Ray Data parity."
import json
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save

from unicorn.runs import EmbeddingShards, ShardError
from unicorn.transfer import (l2norm, streaming_mean, shift_none, shift_unicorn_code, shift_unicorn_paper, shift_oracle,
                              shift_c3, shift_capdec, TRANSFER_METHODS, transfer_shards, center_images, prepare_images)

U = np.array([[1., 0.], [0., 1.]]); MU_T = np.array([.5, .5]); MU_I = np.array([0., 2.])


class FixedNormal:
    "A generator whose standard-normal draws are given (so the noise is known by hand)."
    def __init__(self, z): self.z = np.asarray(z, float)
    def standard_normal(self, shape): return self.z


def test_method_names():
    assert list(TRANSFER_METHODS) == ["none", "unicorn_code", "unicorn_paper", "oracle", "c3", "capdec", "c3_spec", "realign"]


def test_formulas_by_hand():
    np.testing.assert_allclose(shift_none(U), U)
    np.testing.assert_allclose(shift_unicorn_code(U, MU_T), [[.5, -.5], [-.5, .5]])          # no re-normalisation
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(shift_unicorn_paper(U, MU_T), [[r, -r], [-r, r]], atol=1e-6)
    # (1,0)-(.5,.5)+(0,2) = (.5,1.5) -> /sqrt(2.5);  (0,1)-(.5,.5)+(0,2) = (-.5,2.5) -> /sqrt(6.5)
    np.testing.assert_allclose(shift_oracle(U, MU_T, MU_I), [[.3162278, .9486833], [-.1961161, .9805807]], atol=1e-6)
    z = [[.1, .2], [0., 0.]]      # sigma2 = 0.25 -> eps = 0.5 z = (.05, .1)
    # C3: (1,0)-(.5,.5)+(.05,.1) = (.55,-.4) -> /sqrt(.4625)
    np.testing.assert_allclose(shift_c3(U, MU_T, sigma2=.25, rng=FixedNormal(z))[0], [.55 / np.sqrt(.4625), -.4 / np.sqrt(.4625)], atol=1e-6)
    # CapDec: (1,0)+(.05,.1) = (1.05,.1) -> /sqrt(1.1125)
    np.testing.assert_allclose(shift_capdec(U, sigma2=.25, rng=FixedNormal(z))[0], [1.05 / np.sqrt(1.1125), .1 / np.sqrt(1.1125)], atol=1e-6)


def test_noise_variance():
    u = l2norm(np.ones((20000, 4)))
    d = shift_capdec(u, sigma2=0.0, rng=np.random.default_rng(0)) - u
    assert np.abs(d).max() < 1e-6
    eps = np.random.default_rng(3).standard_normal((20000, 4)) * np.sqrt(0.016)
    np.testing.assert_allclose(shift_c3(u, u.mean(0), rng=np.random.default_rng(3)), l2norm(u - u.mean(0) + eps), atol=1e-5)
    assert abs(eps.var() - 0.016) < 1e-3


def test_streaming_mean_equals_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    store = EmbeddingShards(tmp_path / "s")
    parts = [l2norm(rng.normal(size=(n, 32))).astype(np.float16) for n in (100, 1, 57, 300)]
    for k, p in enumerate(parts): store.write(k, ([f"{k}-{i}" for i in range(len(p))], p))
    full = np.concatenate(parts).astype(np.float64)
    np.testing.assert_allclose(streaming_mean(store), full.mean(0), atol=1e-6)
    np.testing.assert_allclose(streaming_mean(p.astype(np.float32) for p in parts), full.mean(0), atol=1e-6)
    assert streaming_mean(store).dtype == np.float64


def _raw(store, k, ids, emb):
    store.root.mkdir(parents=True, exist_ok=True)
    meta = {} if ids is None else {"ids": json.dumps(ids)}
    store.path(k).write_bytes(save({"embeddings": np.asarray(emb, np.float16)}, metadata=meta))


@pytest.mark.parametrize("case,emb,ids,msg", [
    ("nan", [[np.nan, 1.]], ["a"], "non-finite"),
    ("inf", [[np.inf, 1.]], ["a"], "non-finite"),
    ("dim", [[1., 0., 0.]], ["a"], "dimension 3 != 2"),
    ("noids", [[1., 0.]], None, "no 'ids'"),
    ("fewids", [[1., 0.], [0., 1.]], ["a"], "1 ids for 2 rows"),
])
def test_bad_shards_refused_naming_the_shard(tmp_path, case, emb, ids, msg):
    src = EmbeddingShards(tmp_path / case)
    _raw(src, 0, ["ok"], [[1., 0.]]); _raw(src, 1, ids, emb)
    for call in (lambda: streaming_mean(src),
                 lambda: transfer_shards(src, EmbeddingShards(tmp_path / f"{case}-out"), "unicorn_paper", mu_t=np.zeros(2), progress=False)):
        with pytest.raises(ShardError, match="part-00001.safetensors") as e: call()
        assert msg in str(e.value)


def test_transfer_streams_and_resumes(tmp_path):
    rng = np.random.default_rng(1)
    src = EmbeddingShards(tmp_path / "text")
    u = l2norm(rng.normal(size=(50, 8)))
    for k in range(5): src.write(k, ([f"c{k * 10 + i}" for i in range(10)], u[k * 10:(k + 1) * 10]))
    u16 = src.load_all().emb.astype(np.float32)
    dst = EmbeddingShards(tmp_path / "syn")
    c = transfer_shards(src, dst, "unicorn_paper", progress=False)
    assert c == {"shards": 5, "written": 5, "resumed": 0, "rows": 50}
    np.testing.assert_allclose(dst.load_all().emb.astype(np.float32), shift_unicorn_paper(u16, u16.astype(np.float64).mean(0)), atol=2e-3)
    dst.path(3).unlink()
    c = transfer_shards(src, dst, "unicorn_paper", progress=False)
    assert (c["written"], c["resumed"]) == (1, 4)
    assert dst.load_all().ids == [f"c{i}" for i in range(50)]


def test_center_images():
    v = np.array([[1., 0.], [0., 1.], [1., 1.]])
    np.testing.assert_allclose(center_images(v), v - 2 / 3, atol=1e-6)
    np.testing.assert_allclose(center_images(v, mean=[0., 1.]), [[1., -1.], [0., 0.], [1., 0.]])
    for m in ("unicorn_code", "unicorn_paper", "c3"):                   # one definition: ṽ = v − E[V], not re-normalised
        np.testing.assert_allclose(prepare_images(v, m), v - 2 / 3, atol=1e-6)
    np.testing.assert_allclose(prepare_images(v, "capdec"), v)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
                  elements=st.floats(-10, 10, width=32)))
def test_centring_is_one_subtraction(v):
    """For every centring method but C3's own (`c3_spec`, re-normalised by design) prepare_images is v − (own mean) by
    default and v − E[V] for a given E[V]; never scaled."""
    from unicorn.transfer import TEST_TIME_CENTRING
    mu = np.linspace(-1, 1, v.shape[1])
    for m, (centre, centring) in TEST_TIME_CENTRING.items():
        if m == "c3_spec": continue
        want = v - v.astype(np.float64).mean(0) if centre else v
        np.testing.assert_allclose(prepare_images(v, m), want, atol=1e-4)
        np.testing.assert_allclose(prepare_images(v, m, mean=mu), v - mu if centre else v, atol=1e-5)
        assert centring in ((None,) if not centre else ("paper",))


def test_center_image_shards_paper_and_c3(tmp_path):
    from unicorn.transfer import center_image_shards, centring_mean
    v = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    src = EmbeddingShards(tmp_path / "img"); src.write(0, ([f"i{j}" for j in range(4)], v[:4])); src.write(1, ([f"i{j}" for j in range(4, 7)], v[4:]))
    stored = src.load_all().emb.astype(np.float64)
    center_image_shards(src, EmbeddingShards(tmp_path / "paper"), "unicorn_paper", progress=False)
    np.testing.assert_allclose(EmbeddingShards(tmp_path / "paper").load_all().emb, stored - stored.mean(0), atol=2e-3)
    mu_train = centring_mean("c3", {"mu_image_train": np.full(4, .5)})
    center_image_shards(src, EmbeddingShards(tmp_path / "c3"), "unicorn_code", mean=mu_train, centring="c3", progress=False)
    np.testing.assert_allclose(EmbeddingShards(tmp_path / "c3").load_all().emb, stored - .5, atol=2e-3)
    with pytest.raises(ValueError, match="mu_image_train"):
        center_image_shards(src, EmbeddingShards(tmp_path / "x"), "c3", centring="c3", progress=False)


def test_ray_transfer_matches_streaming(tmp_path):
    import ray  # noqa: F401  (a pinned requirement: a missing ray must fail, not skip)
    from unicorn.transfer import transfer_shards_ray
    rng = np.random.default_rng(2)
    src = EmbeddingShards(tmp_path / "text")
    for k in range(3): src.write(k, ([f"c{k}-{i}" for i in range(7)], l2norm(rng.normal(size=(7, 6)))))
    a, b = EmbeddingShards(tmp_path / "a"), EmbeddingShards(tmp_path / "b")
    transfer_shards(src, a, "c3", seed=5, progress=False)
    c = transfer_shards_ray(src, b, "c3", seed=5, num_cpus=1)
    assert c["written"] == 3 and c["rows"] == 21
    sa, sb = a.load_all(), b.load_all()
    assert sa.ids == sb.ids
    np.testing.assert_array_equal(sa.emb, sb.emb)        # same per-shard generator -> identical shards


# ---------------------------------------------------------------- C3 as its code runs it (issue 24): `c3_spec`
def test_c3_spec_by_hand():
    "Norm(Norm(u) − μ_T + ε) on the text; Norm(Norm(v) − μ_I^train) on the test images (github.com/yuhui-zh15/C3)."
    from unicorn.transfer import shift_c3_spec, prepare_images_c3_spec
    u = np.array([[2., 0.], [0., .5]])                                   # normalised first: (1, 0), (0, 1)
    z = np.array([[.1, .2], [0., 0.]])
    got = shift_c3_spec(u, MU_T, sigma2=1.0, rng=FixedNormal(z))
    np.testing.assert_allclose(got[0], [.6 / np.sqrt(.45), -.3 / np.sqrt(.45)], atol=1e-6)
    np.testing.assert_allclose(got, shift_c3(l2norm(u), MU_T, sigma2=1.0, rng=FixedNormal(z)), atol=1e-7)   # `c3` on Norm(u)
    v, h = np.array([[4., 0.], [0., 3.]]), 1 / np.sqrt(2)                # (1, 0) − (.5, .5) = (.5, −.5) -> (h, −h)
    np.testing.assert_allclose(prepare_images_c3_spec(v, [.5, .5]), [[h, -h], [-h, h]], atol=1e-6)
    with pytest.raises(ValueError, match="mu_image_train needed"): prepare_images_c3_spec(v, None)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.just(5)), elements=st.floats(-10, 10, width=32)),
       hnp.arrays(np.float64, 5, elements=st.floats(-.9, .9)))
def test_c3_spec_test_images_are_unit_rows_centred_on_the_train_mean(v, mu):
    from unicorn.transfer import prepare_images_c3_spec
    out = prepare_images_c3_spec(v, mu)
    want = l2norm(l2norm(v.astype(np.float64)) - mu)                  # in float64: rows of 1e-25 are unit too
    np.testing.assert_allclose(out, want, atol=1e-5)
    norms = np.linalg.norm(out, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms < 1e-6))


def test_c3_noise_by_dimension():
    "C3's code: std sqrt(0.016) per coordinate at d = 512; the same noise-to-signal ratio at d needs 0.016·512/d."
    from unicorn.transfer import c3_sigma2_at_dim
    assert c3_sigma2_at_dim(512) == pytest.approx(0.016) and c3_sigma2_at_dim(256) == pytest.approx(0.032)
    assert np.sqrt(c3_sigma2_at_dim(256) * 256) == pytest.approx(np.sqrt(0.016 * 512))
    with pytest.raises(ValueError, match="positive"): c3_sigma2_at_dim(0)


def test_transfer_c3_spec_streams_and_resumes(tmp_path):
    from unicorn.transfer import shift_c3_spec, transfer_c3_spec
    u = np.random.default_rng(5).normal(size=(9, 6))
    src = EmbeddingShards(tmp_path / "text")
    src.write(0, ([f"c{i}" for i in range(5)], u[:5]))
    src.write(1, ([f"c{i}" for i in range(5, 9)], u[5:]))
    dst = EmbeddingShards(tmp_path / "out")
    assert transfer_c3_spec(src, dst, seed=2, progress=False)["written"] == 2
    mu = streaming_mean(src, normalize=True)
    u16 = src.load_all().emb
    want = shift_c3_spec(u16[5:], mu, rng=np.random.default_rng([2, 1]))
    np.testing.assert_allclose(dst.read(1).emb.astype(np.float32), want, atol=2e-3)
    before = dst.read(0).emb.copy()
    dst.path(0).unlink()
    c = transfer_c3_spec(src, dst, seed=2, progress=False)
    assert (c["written"], c["resumed"]) == (1, 1)
    np.testing.assert_array_equal(dst.read(0).emb, before)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, (6, 3), elements=st.floats(-10, 10, width=32)), st.integers(0, 99))
def test_c3_spec_sees_renormalised_images_centred_on_the_training_mean(v, seed):
    "`c3_spec` test images are Norm(Norm(v) − μ_I^train) (C3's code); without the training mean they are refused."
    from unicorn.transfer import TEST_TIME_CENTRING, l2norm
    mu = l2norm(np.random.default_rng(seed).standard_normal((4, 3))).mean(0)
    want = l2norm(l2norm(v.astype(np.float64)) - mu)
    np.testing.assert_allclose(prepare_images(v, "c3_spec", mean=mu), want, atol=1e-5)
    assert TEST_TIME_CENTRING["c3_spec"] == (True, "c3") and TEST_TIME_CENTRING["realign"] == (False, None)
    np.testing.assert_array_equal(prepare_images(v, "realign"), v)
    with pytest.raises(ValueError, match="mu_image_train needed"): prepare_images(v, "c3_spec")


def test_c3_spec_and_realign_stream_as_conditions(tmp_path):
    "`transfer_shards` writes `c3_spec` as `transfer_c3_spec` does (same bytes) and sends `realign` to its own driver."
    from unicorn.transfer import apply_transfer, transfer_c3_spec
    rng = np.random.default_rng(1)
    src = EmbeddingShards(tmp_path / "t")
    for k in range(3): src.write(k, ([f"t{k}-{j}" for j in range(5)], rng.standard_normal((5, 8))))
    transfer_shards(src, EmbeddingShards(tmp_path / "a"), "c3_spec", seed=3, progress=False)
    transfer_c3_spec(src, EmbeddingShards(tmp_path / "b"), seed=3, progress=False)
    for k in range(3):
        a, b = (EmbeddingShards(tmp_path / x).path(k).read_bytes() for x in "ab")
        assert a == b
    with pytest.raises(ValueError, match="transfer_realign"):
        transfer_shards(src, EmbeddingShards(tmp_path / "c"), "realign")
    with pytest.raises(ValueError, match="image pool"): apply_transfer("realign", np.eye(2), np.zeros(2))
