"Synth²: the flow-matching generator learns a conditional distribution; generation resumes exactly; concept balance."
import numpy as np
from collections import Counter

from unicorn.runs import EmbeddingShards
from unicorn.synth2 import (balanced_plan, balanced_subset, concept_entropy, concept_histogram, gap_report,
                            generate_shards, sample_flow_prior, train_flow_prior)


def _toy(n=900, k=3, d=12, seed=0):
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(d, d)))[0][:k]
    lab = rng.integers(0, k, n)
    y = dirs[lab] + 0.1 * rng.normal(size=(n, d)); y /= np.linalg.norm(y, axis=1, keepdims=True)
    return np.eye(k)[lab].astype(np.float32), y.astype(np.float32), dirs, lab


def test_generator_matches_classes_and_beats_unconditional():
    c, y, dirs, lab = _toy()
    model, losses = train_flow_prior(c, y, hidden=64, n_layers=2, train_steps=400, batch_size=128, lr=3e-3, seed=0, num_threads=1)
    assert losses[-1] < losses[0]
    q = np.eye(3)[np.repeat(np.arange(3), 20)]
    s = sample_flow_prior(model, q, sample_steps=10, seed=1)
    acc = ((s @ dirs.T).argmax(1) == np.repeat(np.arange(3), 20)).mean()
    assert acc > 0.9, acc
    # samples are spread like the data, not collapsed to the class mean
    spread = np.linalg.norm(s[:20] - s[:20].mean(0), axis=1).mean()
    data_spread = np.linalg.norm(y[lab == 0] - y[lab == 0].mean(0), axis=1).mean()
    assert 0.3 * data_spread < spread < 3 * data_spread, (spread, data_spread)
    # same seed -> same samples
    np.testing.assert_array_equal(s, sample_flow_prior(model, q, sample_steps=10, seed=1))


def test_generate_shards_resumes_bit_identically(tmp_path):
    c, y, _, _ = _toy(n=300)
    model, _ = train_flow_prior(c, y, hidden=32, n_layers=1, train_steps=50, batch_size=64, num_threads=1)
    src = EmbeddingShards(tmp_path / "text"); src.write(0, ([f"cap-{i}" for i in range(7)], np.eye(3)[np.arange(7) % 3]))
    dst = EmbeddingShards(tmp_path / "synth2")
    assert generate_shards(model, src, dst, sample_steps=4, shard_size=3, progress=False)["written"] == 3
    first = dst.load_all()
    dst.path(1).unlink()                              # as if killed before shard 1 landed
    assert generate_shards(model, src, dst, sample_steps=4, shard_size=3, progress=False)["written"] == 1
    again = dst.load_all()
    assert again.ids == first.ids == [f"cap-{i}" for i in range(7)]
    np.testing.assert_array_equal(again.emb, first.emb)


def test_gap_report_ranks_a_closer_set_higher():
    c, y, dirs, lab = _toy(n=400)
    far = y + 0.5; far /= np.linalg.norm(far, axis=1, keepdims=True)
    rows = {r["method"]: r for r in gap_report({"near": y, "far": far}, {"near": y, "far": y},
                                                src_idx=np.arange(400), gallery_labels=lab, src_labels=lab)}
    assert rows["near"]["gap_norm"] < 1e-6 < rows["far"]["gap_norm"]
    assert rows["near"]["separability"] < rows["far"]["separability"]
    assert rows["near"]["paired_cos"] > rows["far"]["paired_cos"]


def test_concept_balance():
    axes = {"shape": ["circle", "rectangle", "triangle"], "color": ["red", "blue"]}
    plan = balanced_plan(axes, 20, seed=3)
    cnt = Counter((p["shape"], p["color"]) for p in plan)
    assert len(cnt) == 6 and max(cnt.values()) - min(cnt.values()) <= 1
    skewed = [{"caption": "a red circle"}] * 30 + [{"caption": "a blue triangle"}] * 3 + [{"caption": "a red rectangle"}] * 3
    before = concept_entropy(concept_histogram([r["caption"] for r in skewed], axes["shape"]))["normalized"]
    sub = balanced_subset(skewed, axes, 9)
    after = concept_entropy(concept_histogram([r["caption"] for r in sub], axes["shape"]))["normalized"]
    assert len(sub) == 9 and after > before and after > 0.99
