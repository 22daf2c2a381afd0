"""The pre-tokenised data path (issue 16, part 1): a `TokenStore` saved beside the run holds exactly what
`tokenize_record` gives, is never read for other records or another tokenizer, refuses damaged files by name, and
training through the `DataLoader` (`stage_loader`, with or without worker processes) sees the same micro-batches in
the same order as `step_batches`, so trained weights are bit-identical."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from unicorn.fixtures import tiny_llama
from unicorn.runs import EmbeddingShards, ShardError
from unicorn.train import StageSchedule, StepSampler, stage_accelerator, stage_loader, step_batches, train_stage
from unicorn.vlm import UnicornVLM, image_token_id, set_trainable
from unicorn.vlm_data import (EmbeddingIndex, RecordError, TokenStore, VLMDataset, caption_records, token_fingerprint,
                              token_store, tokenize_record)

CAPTIONS = ["red", "a big blue square on the left of a small green circle", "circle", "two yellow triangles",
            "a red circle and a blue square", "blue", "a small square", "green circle", "red", "circle"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    EmbeddingShards(root, dim=8).write(0, ([f"c{i}" for i in range(10)], np.random.default_rng(0).standard_normal((10, 8))))
    _, tok = tiny_llama()
    return caption_records([{"id": f"c{i}", "caption": c} for i, c in enumerate(CAPTIONS)]), tok, EmbeddingIndex(root)


def test_store_equals_tokenize_record_and_shares_repeated_text(data, tmp_path):
    records, tok, index = data
    ds = VLMDataset(records, tok, index, template="plain", k=2, store_dir=tmp_path)
    assert len(ds.store.offsets) - 1 == len(set(CAPTIONS))                      # "red" and "circle" stored once
    for i, r in enumerate(records):
        want = tokenize_record(tok, r, "plain", 2)
        assert ds[i]["input_ids"] == want["input_ids"] and ds[i]["labels"] == want["labels"]
        assert torch.equal(ds[i]["image_emb"], torch.from_numpy(index[r["image"]]))


def test_store_is_reused_only_for_the_same_records_tokenizer_and_settings(data, tmp_path):
    records, tok, index = data
    token_store(records, tok, index, "plain", 2, folder=tmp_path)
    (saved,) = tmp_path.iterdir(); stamp = saved.stat().st_mtime_ns
    again = token_store(records, tok, index, "plain", 2, folder=tmp_path)
    assert again.path == saved and saved.stat().st_mtime_ns == stamp       # read back, not rewritten
    other = copy.deepcopy(tok); other.add_tokens(["zebra"])
    fps = {token_fingerprint(records, tok, "plain", 2, 512, True, None),
           token_fingerprint(records, tok, "plain", 3, 512, True, None),               # another k
           token_fingerprint(records, tok, "chat", 2, 512, True, None),                # another template
           token_fingerprint(records[:-1] + [copy.deepcopy(records[0])], tok, "plain", 2, 512, True, None),  # other text
           token_fingerprint(records, other, "plain", 2, 512, True, None)}            # another tokenizer
    assert len(fps) == 5


def test_a_cached_store_still_checks_the_conditions_images(data, tmp_path):
    records, tok, index = data
    token_store(records, tok, index, "plain", 2, folder=tmp_path)
    bad = records[:3] + [{**records[3], "image": "nope"}] + records[4:]
    with pytest.raises(RecordError, match=r"record 'pt-c3' \(#3\): field 'image' = 'nope' has no embedding"):
        token_store(bad, tok, index, "plain", 2, folder=tmp_path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.integers(0, 10_000))
def test_a_damaged_store_is_refused_by_name(data, tmp_path, junk, cut):
    "Random bytes, or a real store cut short, give a `ShardError` naming the file, never a crash or wrong tokens."
    records, tok, index = data
    good = TokenStore.from_records(records, tok, index, "plain", 2, fingerprint="x").save(tmp_path / "good.safetensors")
    p = tmp_path / "bad.safetensors"
    raw = good.read_bytes()
    for blob in (junk, raw[: min(cut, len(raw) - 1)]):
        p.write_bytes(blob)
        with pytest.raises(ShardError, match="bad.safetensors"): TokenStore.load(p)


def _fresh(tok):
    lm, _ = tiny_llama(seed=0)
    return set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=8, k=2, seed=0), "full")


def test_loader_yields_step_batches_order(data):
    "The loader's micro-batches are `step_batches`' for every step, from any resume step."
    records, tok, index = data
    tok = copy.deepcopy(tok); ds = VLMDataset(records, tok, index, template="plain", k=2)
    sch = StageSchedule(steps=4, lr=0.1, batch_size=4, grad_accum_steps=2, seed=3)
    acc = stage_accelerator(sch.grad_accum_steps)
    for start in (0, 2):
        got = list(stage_loader(acc, ds, sch, start, num_workers=0))
        assert len(got) == (sch.steps - start) * sch.grad_accum_steps == len(StepSampler(len(ds), sch, start))
        for step in range(start, sch.steps):
            want = step_batches(acc, ds, step, sch, image_token_id(tok), None)
            for a, b in enumerate(want):
                items = got[(step - start) * sch.grad_accum_steps + a]
                assert [it["input_ids"] for it in items] == [[int(t) for t in row[m.bool()]] for row, m in zip(b["input_ids"], b["attention_mask"])]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_training_through_the_loader_is_bit_identical(data, workers, monkeypatch):
    """Weights after training with the loader (no workers, or two worker processes) equal those of the old path:
    `train_step` fetching each step's micro-batches itself (`step_batches`)."""
    from unicorn.train import prepare_stage, set_lr, train_step
    records, tok, index = data
    sch = StageSchedule(steps=3, lr=1e-2, batch_size=4, grad_accum_steps=2)
    t1 = copy.deepcopy(tok); v1 = _fresh(t1); ds1 = VLMDataset(records, t1, index, template="plain", k=2)
    monkeypatch.setenv("UNICORN_LOADER_WORKERS", workers)
    log = train_stage(v1, ds1, sch, verbose=False)
    assert len(log["data_s"]) == sch.steps and all(x >= 0 for x in log["data_s"])
    t2 = copy.deepcopy(tok); v2 = _fresh(t2); ds2 = VLMDataset(records, t2, index, template="plain", k=2)
    acc, model, opt, params = prepare_stage(v2, sch, None); model.train()
    for step in range(sch.steps):
        set_lr(opt, sch, step); train_step(acc, model, opt, params, ds2, step, sch, None)
    acc.free_memory()
    for (n, p), (_, q) in zip(v1.named_parameters(), v2.named_parameters()):
        assert torch.equal(p, q), n


def test_batched_fetch_equals_item_fetch(data):
    "`__getitems__` (what the loader calls) returns exactly the items `__getitem__` returns, in order, repeats included."
    records, tok, index = data
    ds = VLMDataset(records, copy.deepcopy(tok), index, template="plain", k=2)
    idx = [7, 0, 3, 3, 9]
    for got, want in zip(ds.__getitems__(idx), [ds[i] for i in idx]):
        assert got["input_ids"] == want["input_ids"] and got["labels"] == want["labels"]
        assert torch.equal(got["image_emb"], want["image_emb"])
