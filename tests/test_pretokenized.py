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
    each step's micro-batches fetched in this process (`step_batches`) and given to `train_step`."""
    from unicorn.train import prepare_stage, set_lr, step_batches, train_step
    records, tok, index = data
    sch = StageSchedule(steps=3, lr=1e-2, batch_size=4, grad_accum_steps=2)
    t1 = copy.deepcopy(tok); v1 = _fresh(t1); ds1 = VLMDataset(records, t1, index, template="plain", k=2)
    monkeypatch.setenv("UNICORN_LOADER_WORKERS", workers)
    log = train_stage(v1, ds1, sch, verbose=False)
    assert len(log["data_s"]) == sch.steps and all(x >= 0 for x in log["data_s"])
    t2 = copy.deepcopy(tok); v2 = _fresh(t2); ds2 = VLMDataset(records, t2, index, template="plain", k=2)
    stage = prepare_stage(v2, sch, None)
    stage.model.train()
    for step in range(sch.steps):
        set_lr(stage.opt, sch, step)
        train_step(stage, step_batches(stage.acc, ds2, step, sch, image_token_id(t2), None), step, sch.max_grad_norm)
    stage.acc.free_memory()
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


# --- a store is checked when it opens (issue 26, item 4) ----------------------------------------------------------
import json, struct, subprocess, sys, textwrap
from unicorn.vlm_data import IGNORE, STORE_FORMAT


def _split(raw: bytes) -> tuple[dict, bytes]:
    "A safetensors file's header and its data bytes."
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(head: dict, data: bytes) -> bytes:
    h = json.dumps(head).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.fixture
def saved(data, tmp_path):
    "A good store on disk (plain template, k=2) and what it holds."
    records, tok, index = data
    st = TokenStore.from_records(records, tok, index, "plain", 2, fingerprint="fp")
    return st.save(tmp_path / "s.safetensors"), st, len(tok)


def test_a_saved_store_records_format_vocab_and_checksum(saved):
    p, st, vocab = saved
    meta = _split(p.read_bytes())[0]["__metadata__"]
    assert meta["format"] == str(STORE_FORMAT) == "2" and meta["vocab"] == str(vocab) and len(meta["checksum"]) == 32
    back = TokenStore.load(p, vocab=vocab)
    assert [back[i] for i in range(len(st))] == [st[i] for i in range(len(st))] and back.vocab == vocab


def test_an_edited_store_is_refused_by_its_checksum(saved):
    "Record 0 made to read record 2's tokens (same size, same fingerprint): refused, naming the file."
    p, st, _ = saved
    head, body = _split(p.read_bytes())
    a, b = head["entry"]["data_offsets"]
    entry = np.frombuffer(body[a:b], np.int32).copy()
    assert entry[0] != entry[2]
    entry[0] = entry[2]                                                              # record 0 reads record 2's text
    p.write_bytes(_join(head, body[:a] + entry.tobytes() + body[b:]))
    with pytest.raises(ShardError, match=r"s\.safetensors: contents do not match the checksum"): TokenStore.load(p)
    head["__metadata__"]["fingerprint"] = "other"                                    # metadata is covered too
    p.write_bytes(_join(head, body))
    with pytest.raises(ShardError, match="do not match the checksum"): TokenStore.load(p)


def _store(tmp_path, ids, labels, offsets, entry, vocab=None):
    "A store with these arrays, saved with a valid checksum (as a buggy writer would leave it)."
    arr = lambda x, dt: np.asarray(x, dt)
    st = TokenStore(arr(ids, np.int32), arr(labels, np.int32), arr(offsets, np.int64), np.zeros(1, np.int32), "fp",
                    vocab=vocab)
    st.entry = arr(entry, np.int32)                                  # set after: the constructor indexes by it
    return st.save(tmp_path / "crafted.safetensors")


@pytest.mark.parametrize("ids, labels, offsets, entry, vocab, msg", [
    ([1, 2, 3], [IGNORE, 2, 3], [0, 3], [0], 3,
     r"token id 3 at position 2 \(sequence 0\) is outside the vocabulary \[0, 3\)"),
    ([1, -2, 3], [IGNORE, -2, 3], [0, 3], [0], 9, r"token id -2 at position 1"),
    ([1, 2, 3], [IGNORE, 7, 3], [0, 3], [0], 9,
     r"label 7 at position 1 \(sequence 0\) is neither -100 nor its token 2"),
    ([1, 2, 3, 4], [IGNORE, 2, IGNORE, IGNORE], [0, 2, 4], [0, 1], 9, r"sequence 1 has no supervised label"),
    ([1, 2], [IGNORE, 2], [0, 2], [0, 1], 9, r"record 1.s entry 1 is not one of the 1 sequences"),
    ([1, 2], [IGNORE, 2], [0, 3], [0], 9, r"offsets do not cover ids and labels"),
    ([1, 2], [IGNORE, 2], [0, 2, 1, 2], [0], 9, r"offsets do not cover ids and labels"),
])
def test_store_values_are_checked_on_open(tmp_path, ids, labels, offsets, entry, vocab, msg):
    p = _store(tmp_path, ids, labels, offsets, entry, vocab)
    with pytest.raises(ShardError, match=r"crafted\.safetensors: " + msg): TokenStore.load(p)


def test_ids_beyond_the_tokenizers_vocabulary_are_refused(tmp_path):
    p = _store(tmp_path, [1, 50], [IGNORE, 50], [0, 2], [0], vocab=100)
    assert TokenStore.load(p)[0]["input_ids"] == [1, 50]
    with pytest.raises(ShardError, match=r"token id 50 at position 1 .* outside the vocabulary \[0, 40\)"):
        TokenStore.load(p, vocab=40)


def _edit(p, fn):
    "Rewrite `p` with its header changed by `fn(head)` (the data bytes kept, the checksum not updated)."
    head, body = _split(p.read_bytes())
    fn(head)
    p.write_bytes(_join(head, body))


@pytest.mark.parametrize("change, msg", [
    (lambda h: h["labels"].update(data_offsets=h["ids"]["data_offsets"]), "tensors 'ids' and 'labels' overlap"),
    (lambda h: h["ids"].update(shape="12"), "tensor 'ids': field 'shape' must be"),
    (lambda h: h["ids"].update(shape=[1.5]), "tensor 'ids': field 'shape' must be"),
    (lambda h: h["entry"].update(data_offsets=[0.0, 4]), "tensor 'entry': field 'data_offsets' must be two ints"),
    (lambda h: h["entry"].update(data_offsets=[8, 4]), "tensor 'entry': field 'data_offsets' must be two ints"),
    (lambda h: h["ids"].update(dtype="I64"), "expected a I32 tensor 'ids'"),
    (lambda h: h.pop("offsets"), "expected a I64 tensor 'offsets'"),
    (lambda h: h.update(labels=[1]), "expected a I32 tensor 'labels'"),
    (lambda h: h.pop("__metadata__"), "no metadata"),
    (lambda h: h["__metadata__"].update(format="1"), r"store format '1' is not this version's \(2\)"),
    (lambda h: h["__metadata__"].update(format="3"), r"store format '3'"),
    (lambda h: h["__metadata__"].pop("checksum"), "metadata field 'checksum' is missing"),
    (lambda h: h["__metadata__"].update(vocab="lots"), "metadata field 'vocab' is not a size"),
])
def test_store_header_fields_are_checked_by_name(saved, change, msg):
    p, _, _ = saved
    _edit(p, change)
    with pytest.raises(ShardError, match=r"s\.safetensors: .*" + msg): TokenStore.load(p)


JSONV = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
                     lambda k: st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=4), k, max_size=3),
                     max_leaves=6)
TENSORS = ("ids", "labels", "offsets", "entry")
FIELD = st.sampled_from([(t, f) for t in TENSORS for f in ("dtype", "shape", "data_offsets")]
                        + [("__metadata__", f) for f in ("format", "fingerprint", "checksum", "vocab")]
                        + [(t, None) for t in ("ids", "labels", "offsets", "entry", "__metadata__")])


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(FIELD, JSONV | st.integers(-64, 64) | st.lists(st.integers(-8, 400), min_size=1, max_size=2))
def test_fuzz_the_store_header(saved, field, value):
    "Any value in any header field: the store is refused by name (`ShardError`), or reads back exactly as saved."
    p, st0, vocab = saved
    good = p.read_bytes()
    try:
        def put(h):
            if field[1] is None: h[field[0]] = value
            else: h[field[0]][field[1]] = value
        _edit(p, put)
        try: back = TokenStore.load(p, vocab=vocab)
        except ShardError as e:
            assert "s.safetensors" in str(e)
            return
        assert [back[i] for i in range(len(st0))] == [st0[i] for i in range(len(st0))]
    finally: p.write_bytes(good)


# --- no SIGBUS when a file shrinks under an open mapping (issue 26, item 5) ----------------------------------------

SHRINK = textwrap.dedent("""
    import os, sys
    import numpy as np
    from unicorn.runs import EmbeddingShards, ShardError
    from unicorn.vlm_data import EmbeddingIndex, TokenStore
    root = sys.argv[1]
    EmbeddingShards(root + "/emb").write(0, (["a", "b"], np.ones((2, 512))))
    idx = EmbeddingIndex(root + "/emb", populate=sys.argv[2] == "populate")
    shard = idx.paths[0]
    st = TokenStore(np.arange(3000, dtype=np.int32), np.arange(3000, dtype=np.int32), np.array([0, 3000]),
                    np.zeros(1, np.int32), "fp").save(root + "/tok.safetensors")
    store = TokenStore.load(st)
    os.truncate(shard, 100); os.truncate(st, 100)                  # cut in place while mapped
    for read in (lambda: idx["b"], lambda: idx.get_many(["a", "b"]), lambda: store[0], lambda: store.many([0])):
        try: read(); print("READ")
        except ShardError as e: print("REFUSED", e)
""")


@pytest.mark.parametrize("how", ["lazy", "populate"])
def test_a_shard_cut_under_an_open_index_is_an_error_not_sigbus(tmp_path, how):
    p = subprocess.run([sys.executable, "-c", SHRINK, str(tmp_path), how], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])      # -7 would be SIGBUS: the process killed
    lines = p.stdout.splitlines()
    assert len(lines) == 4 and all(l.startswith("REFUSED ") for l in lines), lines
    assert "part-00000.safetensors: the file shrank to 100 bytes under the open index" in lines[0]
    assert "tok.safetensors: the file shrank to 100 bytes while in use" in lines[2]
