"""The fast transfer path (mapped reads, one float32 pass per chunk, checks folded in, background fsync) against a frozen
copy of the code it replaced: the same bits for every method and the mean, the same files, the same errors."""
import json, re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as hs
from safetensors.numpy import save
from tqdm.auto import tqdm

from unicorn import transfer as T
from unicorn.runs import EmbeddingShard, EmbeddingShards, ShardError

METHODS = ["none", "unicorn_code", "unicorn_paper", "oracle", "c3", "capdec"]

# ---------------------------------------------------------------- frozen reference: unicorn/transfer.py before issue 16
def l2norm(x, eps: float = 1e-12) -> np.ndarray:
    "Each row of `x` divided by its L2 norm (float32, or float64 if `x` is float64)."
    x = np.asarray(x)
    x = x if x.dtype == np.float64 else x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)

def _blocks(src) -> Iterable[tuple[str, np.ndarray]]:
    "Yield `(name, rows)` from an `EmbeddingShards` store (checked shard by shard) or an iterable of arrays/shards."
    if isinstance(src, EmbeddingShards):
        paths = src.shard_paths()
        if not paths: raise ShardError(f"{src.root}: no embedding shards")
        for p in paths: yield str(p), src.read_path(p).emb
        return
    for k, b in enumerate(src):
        name = f"block {k}"
        if isinstance(b, EmbeddingShard):
            EmbeddingShards(".").check(name, b.ids, np.asarray(b.emb)); b = b.emb
        b = np.asarray(b)
        if b.ndim != 2: raise ShardError(f"{name}: embeddings must be 2-D [n, d], got shape {b.shape}")
        if not np.isfinite(b).all(): raise ShardError(f"{name}: non-finite value (NaN/Inf)")
        yield name, b

def streaming_mean(src, normalize: bool = False) -> np.ndarray:
    "Column mean (float64, O(d) memory) over an `EmbeddingShards` store or an iterable of [n, d] arrays; rows L2-normalised first if `normalize`."
    total, n, dim = None, 0, None
    for name, b in _blocks(src):
        if dim is None: dim = b.shape[1]; total = np.zeros(dim, np.float64)
        elif b.shape[1] != dim: raise ShardError(f"{name}: dimension {b.shape[1]} != {dim} of the earlier shards")
        b = l2norm(b.astype(np.float64)) if normalize else b
        total += b.sum(0, dtype=np.float64); n += b.shape[0]
    if not n: raise ShardError(f"{getattr(src, 'root', 'input')}: no rows to average")
    return total / n

def shift_none(u) -> np.ndarray:
    "The raw text embedding (no transfer)."
    return np.asarray(u, np.float32).copy()

def shift_unicorn_code(u, mu_t) -> np.ndarray:
    "Unicorn as in the authors' code: `u - mu_t`, no re-normalisation."
    return (np.asarray(u, np.float32) - np.asarray(mu_t, np.float32)).astype(np.float32)

def shift_unicorn_paper(u, mu_t) -> np.ndarray:
    "Unicorn as in the paper: `Norm(u - mu_t)`."
    return l2norm(shift_unicorn_code(u, mu_t))

def shift_oracle(u, mu_t, mu_i) -> np.ndarray:
    "Oracle mean shift with image statistics: `Norm(u - mu_t + mu_i)`."
    return l2norm(np.asarray(u, np.float32) - np.asarray(mu_t, np.float32) + np.asarray(mu_i, np.float32))

def _noise(shape, sigma2: float, rng) -> np.ndarray:
    "Gaussian noise N(0, sigma2 I) of `shape` (float32)."
    if sigma2 < 0: raise ValueError(f"sigma2 must be >= 0, got {sigma2}")
    rng = rng if rng is not None else np.random.default_rng()
    return (rng.standard_normal(shape) * np.sqrt(sigma2)).astype(np.float32)

def shift_c3(u,                      # text embeddings [n, d]
             mu_t,                   # the text mean [d] that is subtracted
             sigma2: float = 0.016,  # variance of the added Gaussian noise (0: none)
             rng=None,               # a numpy Generator for the noise (None: a fresh, unseeded one)
            ) -> np.ndarray:
    "C3: `Norm(u - mu_t + eps)`, eps ~ N(0, sigma2 I)."
    u = np.asarray(u, np.float32)
    return l2norm(u - np.asarray(mu_t, np.float32) + _noise(u.shape, sigma2, rng))

def shift_capdec(u, sigma2: float = 0.016, rng=None) -> np.ndarray:
    "CapDec: noise only, `Norm(u + eps)`, eps ~ N(0, sigma2 I)."
    u = np.asarray(u, np.float32)
    return l2norm(u + _noise(u.shape, sigma2, rng))

TRANSFER_METHODS: dict[str, Callable] = {
    "none": shift_none, "unicorn_code": shift_unicorn_code, "unicorn_paper": shift_unicorn_paper,
    "oracle": shift_oracle, "c3": shift_c3, "capdec": shift_capdec,
}

_NEEDS = {"none": (), "unicorn_code": ("mu_t",), "unicorn_paper": ("mu_t",), "oracle": ("mu_t", "mu_i"),
          "c3": ("mu_t",), "capdec": ()}

def apply_transfer(method: str,            # a key of `TRANSFER_METHODS`
                   u,                      # text embeddings [n, d]
                   mu_t=None,              # text mean [d] (needed by every method but 'none' and 'capdec')
                   mu_i=None,              # image mean [d] (needed by 'oracle' only)
                   sigma2: float = 0.016,  # noise variance of 'c3' and 'capdec' (ignored by the others)
                   rng=None,               # a numpy Generator for that noise (None: a fresh, unseeded one)
                  ) -> np.ndarray:
    "Apply transfer `method` (a key of `TRANSFER_METHODS`) to rows `u`, passing only the statistics it uses."
    if method not in TRANSFER_METHODS: raise ValueError(f"unknown transfer method {method!r}: choose one of {list(TRANSFER_METHODS)}")
    have = {"mu_t": mu_t, "mu_i": mu_i}
    missing = [k for k in _NEEDS[method] if have[k] is None]
    if missing: raise ValueError(f"transfer method {method!r} needs {missing}")
    kw = {k: have[k] for k in _NEEDS[method]}
    if method in ("c3", "capdec"): kw.update(sigma2=sigma2, rng=rng)
    return TRANSFER_METHODS[method](u, **kw)

def _shard_index(p: Path) -> int:
    "The index `k` of a `part-0000k.*` shard file."
    m = re.match(r"part-(\d+)\.", p.name)
    if not m: raise ShardError(f"{p}: not a part-NNNNN shard name")
    return int(m.group(1))

def transfer_shards(src: EmbeddingShards,   # the text-embedding shards to transfer
                    dst: EmbeddingShards,   # where the results go (shards already there are kept: resume)
                    method: str,            # a key of `TRANSFER_METHODS`
                    mu_t=None,              # text mean [d] (None: `src`'s own if `method` needs it)
                    mu_i=None,              # image mean [d], needed by 'oracle'
                    sigma2: float = 0.016,  # noise variance of 'c3' and 'capdec'
                    seed: int = 0,          # noise seed: shard k draws from the generator seeded `[seed, k]`
                    progress: bool = True,  # show a progress bar
                   ) -> dict:
    "Write `method`-transferred copies of `src`'s shards into `dst`, shard by shard (resumable); returns counts."
    if method not in TRANSFER_METHODS: raise ValueError(f"unknown transfer method {method!r}: choose one of {list(TRANSFER_METHODS)}")
    paths = src.shard_paths()
    if not paths: raise ShardError(f"{src.root}: no embedding shards")
    if mu_t is None and "mu_t" in _NEEDS[method]: mu_t = streaming_mean(src)
    dim = src.read_path(paths[0]).emb.shape[1]
    for name, mu in (("mu_t", mu_t), ("mu_i", mu_i)):
        if mu is not None and len(mu) != dim: raise ShardError(f"{name} has dimension {len(mu)}, the shards of {src.root} {dim}")
    if dst.dim is None: dst.dim = dim
    counts = {"shards": len(paths), "written": 0, "resumed": 0, "rows": 0}
    for p in tqdm(paths, desc=f"transfer {method}", disable=not progress):
        k = _shard_index(p)
        if dst.exists(k): counts["resumed"] += 1; continue
        sh = src.read_path(p)
        if sh.emb.shape[1] != dim: raise ShardError(f"{p}: dimension {sh.emb.shape[1]} != {dim} (of the first shard)")
        rng = np.random.default_rng([seed, k])
        dst.write(k, (sh.ids, apply_transfer(method, sh.emb, mu_t, mu_i, sigma2, rng)))
        counts["written"] += 1; counts["rows"] += len(sh.ids)
    return counts

# ---------------------------------------------------------------- helpers
def _bits(a) -> tuple:
    "dtype, shape and bytes: equal means bit-identical."
    a = np.asarray(a); return a.dtype, a.shape, a.tobytes()

def _files(store: EmbeddingShards) -> dict:
    "Shard name -> file bytes."
    return {p.name: p.read_bytes() for p in store.shard_paths()}

def _store(root, sizes, d, seed=0, dtype=np.float16, scale=None):
    "A store of unit-ish rows (plus some tiny and large magnitudes: float16 subnormals, rounding ties), shard k of sizes[k] rows."
    rng, st = np.random.default_rng(seed), EmbeddingShards(root)
    for k, n in enumerate(sizes):
        x = rng.standard_normal((n, d)) * (scale if scale is not None else np.exp(rng.uniform(-9, 0, (n, 1))))
        x[:, 0] += 3.0
        rows = np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(.5, 2, (n, 1)))
        st.root.mkdir(parents=True, exist_ok=True)
        st.path(k).write_bytes(save({"embeddings": rows.astype(dtype)}, metadata={"ids": json.dumps([f"r{k}-{i}" for i in range(n)])}))
    return st

def _run(fn, *a, **kw):
    "`fn`'s result, or its error as (type, message)."
    try: return fn(*a, **kw)
    except Exception as e: return (type(e).__name__, str(e))

SIZES = [1, 255, 256, 257, 700, 3]        # around the fast path's 256-row chunks

# ---------------------------------------------------------------- in memory: the same bits
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_apply_transfer_same_bits(method, dtype):
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (3, 2), (257, 37), (600, 1280)]:
        u = T.l2norm(rng.standard_normal(shape) + 2).astype(dtype)
        mu_t, mu_i = rng.standard_normal(shape[1]) * .3, rng.standard_normal(shape[1]) * .3
        a = apply_transfer(method, u, mu_t, mu_i, 0.016, np.random.default_rng(4))
        b = T.apply_transfer(method, u, mu_t, mu_i, 0.016, np.random.default_rng(4))
        assert _bits(a) == _bits(b), (method, dtype, shape)

def test_l2norm_same_bits_and_input_untouched():
    rng = np.random.default_rng(2)
    for x in [rng.standard_normal((40, 300)), rng.standard_normal((9, 5)).astype(np.float32), rng.standard_normal(6),
              rng.standard_normal((4, 3)).astype(np.float16), np.zeros((2, 3)), np.arange(6).reshape(2, 3)]:
        before = x.copy()
        assert _bits(l2norm(x)) == _bits(T.l2norm(x))
        assert _bits(x) == _bits(before)

@settings(max_examples=60, deadline=None)
@given(bits=hs.lists(hs.integers(0, 0xFFFF), min_size=1, max_size=600), d=hs.integers(1, 9),
       method=hs.sampled_from(METHODS), mu=hs.floats(-2, 2))
def test_any_float16_rows_same_bits_in_chunks(bits, d, method, mu):
    "Any finite float16 rows (subnormals, ±0, 65504 ...) give the in-memory formula's bits through the chunked path."
    u = np.array(bits[:len(bits) // d * d] or [0] * d, np.uint16).view(np.float16).reshape(-1, d)
    u = np.where(np.isfinite(u), u, np.float16(0))
    t = T._Transfer(method, np.full(d, mu), np.full(d, -mu / 2), 0.016, 0, d)
    out = np.empty_like(u)
    ok = T._shift_chunks(t, t.stats32(), u, out, np.random.default_rng([0, 1]))
    ref = apply_transfer(method, u, np.full(d, mu), np.full(d, -mu / 2), 0.016, np.random.default_rng([0, 1]))
    with np.errstate(over="ignore"): ref16 = ref.astype(np.float16)
    assert ok == bool(np.isfinite(ref16).all())
    if ok: assert _bits(out) == _bits(ref16)

def test_float16_overflow_threshold():
    "65519.99 still rounds to 65504; 65520 rounds to Inf: the fast path gives exactly those rows back."
    for v, ok in [(65519.99, True), (65520., False), (-65520., False), (np.nan, False)]:
        t = T._Transfer("unicorn_code", np.array([-v + 1.]), None, 0., 0, 1)
        out = np.empty((1, 1), np.float16)
        assert T._shift_chunks(t, t.stats32(), np.ones((1, 1), np.float16), out, None) == ok

# ---------------------------------------------------------------- stores: the same mean, the same files
@pytest.mark.parametrize("normalize", [False, True])
def test_streaming_mean_same_bits(tmp_path, normalize):
    st = _store(tmp_path / "s", SIZES, 33)
    for w in (1, 2, 4): assert _bits(streaming_mean(st, normalize)) == _bits(T.streaming_mean(st, normalize, workers=w))
    big = _store(tmp_path / "b", [3000, 1], 1280, seed=3)
    assert _bits(streaming_mean(big, normalize)) == _bits(T.streaming_mean(big, normalize))

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("given_mu,workers", [(True, None), (False, 1), (False, 3)])
def test_transfer_files_byte_identical(tmp_path, method, given_mu, workers):
    src = _store(tmp_path / "src", SIZES, 48, seed=5)
    mu_t = np.random.default_rng(6).standard_normal(48) * .2 if given_mu else None
    kw = dict(mu_t=mu_t, mu_i=np.linspace(-.3, .3, 48), sigma2=0.02, seed=3, progress=False)
    a, b = EmbeddingShards(tmp_path / "ref"), EmbeddingShards(tmp_path / "new")
    assert transfer_shards(src, a, method, **kw) == T.transfer_shards(src, b, method, workers=workers, **kw)
    assert _files(a) == _files(b) and len(_files(a)) == len(SIZES)

def test_resume_and_float32_shards_byte_identical(tmp_path):
    "A float32 shard on disk (the checked path) and a resumed run write the same files as before."
    src = _store(tmp_path / "src", [300, 20], 16, seed=1)
    _store(tmp_path / "x", [50], 16, seed=2, dtype=np.float32).path(0).replace(src.path(2))
    a, b = EmbeddingShards(tmp_path / "ref"), EmbeddingShards(tmp_path / "new")
    for dst, fn in ((a, transfer_shards), (b, T.transfer_shards)): fn(src, dst, "c3", seed=9, progress=False)
    b.path(1).unlink()
    assert T.transfer_shards(src, b, "c3", seed=9, progress=False) == {"shards": 3, "written": 1, "resumed": 2, "rows": 20}
    assert _files(a) == _files(b)

# ---------------------------------------------------------------- bad input: the same errors, the same files before them
def _nan(st, k, row, v=np.nan):
    "Put `v` into row `row` of shard k (bypassing the store's write check)."
    e = st.read(k, check=False); emb = e.emb.copy(); emb[row, 1] = v
    st.path(k).write_bytes(save({"embeddings": emb}, metadata={"ids": json.dumps(e.ids)}))

CASES = {  # name -> (change the source store, method, transfer kwargs, source dim)
    "nan_late_chunk": (lambda st: _nan(st, 4, 600), "unicorn_paper", {}, None),
    "inf_first_shard": (lambda st: _nan(st, 0, 0, np.inf), "unicorn_paper", {"mu_t": np.zeros(24)}, None),
    "nan_none": (lambda st: _nan(st, 2, 100), "none", {}, None),
    "overflow": (lambda st: None, "unicorn_code", {"mu_t": np.r_[7e4, np.zeros(23)]}, None),
    "overflow_then_nan": (lambda st: _nan(st, 4, 650), "unicorn_code", {"mu_t": np.r_[65520. - 3., np.zeros(23)]}, None),
    "mu_t_nan": (lambda st: None, "c3", {"mu_t": np.r_[np.nan, np.zeros(23)]}, None),
    "no_mu_i": (lambda st: None, "oracle", {}, None),
    "sigma2_negative": (lambda st: None, "capdec", {"sigma2": -1.}, None),
    "dim_change": (lambda st: _store(st.root.parent / "o", [5], 12).path(0).replace(st.path(3)), "unicorn_paper", {}, None),
    "src_dim": (lambda st: None, "unicorn_paper", {}, 23),
    "dup_ids": (lambda st: st.path(2).write_bytes(save({"embeddings": np.ones((2, 24), np.float16)}, metadata={"ids": '["a", "a"]'})), "unicorn_paper", {}, None),
    "no_ids": (lambda st: st.path(2).write_bytes(save({"embeddings": np.ones((2, 24), np.float16)})), "none", {}, None),
    "empty_shard": (lambda st: st.path(2).write_bytes(save({"embeddings": np.ones((0, 24), np.float16)}, metadata={"ids": "[]"})), "unicorn_paper", {}, None),
    "garbage": (lambda st: st.path(3).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "), "unicorn_paper", {}, None),
}

@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("workers", [1, 3])
def test_bad_input_same_error_and_files(tmp_path, case, workers):
    "Every bad input: the same error (type and message), the same files written before it, the same means (or errors)."
    change, method, kw, src_dim = CASES[case]
    st = _store(tmp_path / "src", SIZES, 24, seed=7); change(st)
    src = EmbeddingShards(st.root, dim=src_dim)
    res, new_mean, new_transfer = {}, lambda *a: T.streaming_mean(*a, workers=workers), lambda *a, **k: T.transfer_shards(*a, workers=workers, **k)
    for name, mean_fn, fn in (("ref", streaming_mean, transfer_shards), ("new", new_mean, new_transfer)):
        dst = EmbeddingShards(tmp_path / name)
        out = _run(fn, src, dst, method, progress=False, seed=1, **kw)
        if isinstance(out, tuple): out = (out[0], out[1].replace(str(dst.root), "DST"))
        res[name] = (out, _files(dst) if dst.root.exists() else {}, _run(mean_fn, src), _run(mean_fn, src, True))
    assert res["ref"][0] == res["new"][0]
    assert res["ref"][1] == res["new"][1]
    for i in (2, 3): assert _bits(res["ref"][i]) == _bits(res["new"][i]) if isinstance(res["ref"][i], np.ndarray) else res["ref"][i] == res["new"][i]

def test_dst_dim_refused_like_before(tmp_path):
    st = _store(tmp_path / "src", [4, 4], 8)
    errs = [_run(fn, st, EmbeddingShards(tmp_path / n, dim=9), "unicorn_paper", progress=False)
            for n, fn in (("ref", transfer_shards), ("new", T.transfer_shards))]
    assert errs[0][0] == errs[1][0] == "ShardError"
    assert errs[0][1].replace(str(tmp_path / "ref"), "X") == errs[1][1].replace(str(tmp_path / "new"), "X")

# ---------------------------------------------------------------- the header
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=hs.lists(hs.one_of(hs.text(min_size=1), hs.integers()), min_size=1, max_size=12, unique_by=str), d=hs.integers(1, 4))
def test_header_as_safetensors_writes_it(ids, d):
    emb = np.arange(len(ids) * d, dtype=np.float16).reshape(len(ids), d)
    ref = save({"embeddings": emb}, metadata={"ids": json.dumps([str(i) for i in ids])})
    assert T._shard_header(ids, len(ids), d) + emb.tobytes() == ref
