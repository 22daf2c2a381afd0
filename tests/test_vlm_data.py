"Records, index and collator: answer-only labels, O(1) lookups, clear errors for bad records."
import json
import numpy as np, pytest
from unicorn.fixtures import tiny_tokenizer
from unicorn.runs import EmbeddingShards
from unicorn.vlm import image_token_id
from unicorn.vlm_data import (IGNORE, EmbeddingIndex, MissingEmbeddingError, RecordError, VLMDataset, collate,
                              load_records)

REC = {"id": "r1", "image": "a", "conversations": [
    {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "red"},
    {"from": "human", "value": "And the shape?"}, {"from": "gpt", "value": "circle"}]}

@pytest.fixture
def index(tmp_path):
    st = EmbeddingShards(tmp_path / "emb", dim=4)
    st.write(0, (["a", "b"], np.ones((2, 4)))); st.write(1, (["c"], np.zeros((1, 4))))
    return EmbeddingIndex(tmp_path / "emb")

def test_collator_masks_all_but_answers(index):
    tok = tiny_tokenizer()
    ds = VLMDataset([REC, {**REC, "id": "r2", "image": "c", "conversations": REC["conversations"][:2]}], tok, index, k=4)
    b = collate([ds[0], ds[1]], tok.pad_token_id)
    for row in range(2):
        ids, lab = b["input_ids"][row], b["labels"][row]
        kept = ids[lab != IGNORE]
        assert (lab[b["attention_mask"][row] == 0] == IGNORE).all()
        assert (lab[ids == image_token_id(tok)] == IGNORE).all()
        want = "red<|im_end|>\ncircle<|im_end|>\n" if row == 0 else "red<|im_end|>\n"
        assert tok.decode(kept) == want
        assert (lab[lab != IGNORE] == kept).all()           # targets are the tokens themselves (HF shifts inside)

def test_index_lookup_and_missing(index):
    assert index["c"].tolist() == [0, 0, 0, 0] and len(index) == 3
    with pytest.raises(MissingEmbeddingError, match="no embedding for id 'zz'"): index["zz"]

@pytest.mark.parametrize("bad, msg", [
    ({**REC, "image": "zz"}, "record 'r1' (#0): field 'image' = 'zz' has no embedding"),
    ({**REC, "image": None}, "record 'r1' (#0): field 'image' is missing"),
    ({**REC, "conversations": []}, "record 'r1' (#0): field 'conversations' is empty"),
    ({**REC, "task_type": "multiple_choice", "conversations": [
        {"from": "human", "value": "<image>\nWhich colour?\nA. red\nB. blue\nC. green"}, {"from": "gpt", "value": "D"}]},
     "record 'r1' (#0): field 'conversations[1].value' answers letter 'D', not one of the options ['A', 'B', 'C']"),
])
def test_bad_records_get_clear_errors(index, bad, msg, tmp_path):
    with pytest.raises(RecordError) as e: VLMDataset([bad], tiny_tokenizer(), index)
    assert msg in str(e.value)
    p = tmp_path / "llava.json"; p.write_text(json.dumps([REC, bad]))
    good, rejected = load_records(p, index, on_error="skip")          # the skip mode reports, never returns None
    assert [r["id"] for r in good] == ["r1"] and len(rejected) == 1 and rejected[0]["reason"].startswith("record 'r1' (#1)")

# --- the training-time reader makes the writer's checks (issue 13) -----------------------------------------------

import struct
from hypothesis import given, settings, strategies as st
from safetensors.numpy import save
from unicorn.runs import ShardError
from unicorn.vlm_data import check_record

def _raw(root, k, ids, emb):
    "A shard written without `EmbeddingShards`' checks, as a damaged or crafted file would be."
    p = EmbeddingShards(root).path(k); p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(save({"embeddings": np.asarray(emb, np.float16)}, metadata={"ids": json.dumps(ids)})); return p

def _cut(root):     _raw(root, 0, ["a"], np.ones((1, 8))).write_bytes(_raw(root, 0, ["a"], np.ones((1, 8))).read_bytes()[:-3])
def _huge(root):    _raw(root, 0, ["a"], np.ones((1, 2))).write_bytes(struct.pack("<Q", 2**63) + b"{}")
def _tiny(root):    _raw(root, 0, ["a"], np.ones((1, 2))).write_bytes(b"\x01\x02")
def _garbage(root): _raw(root, 0, ["a"], np.ones((1, 2))).write_bytes(struct.pack("<Q", 4) + b"{]\xff\x00")

@pytest.mark.parametrize("make, msg", [
    (lambda r: (_raw(r, 0, ["a", "b"], np.eye(2)), _raw(r, 1, ["b"], np.ones((1, 2)))),
     r"part-00001.safetensors: duplicate id 'b' in row 0, already in row 1 of .*part-00000.safetensors"),
    (lambda r: _raw(r, 0, ["a", "a"], np.eye(2)), r"part-00000.safetensors: duplicate id 'a' in rows 0 and 1"),
    (lambda r: _raw(r, 0, ["a", ""], np.eye(2)), r"part-00000.safetensors: empty id in row 1"),
    (lambda r: _raw(r, 0, ["a"], np.eye(2)), r"part-00000.safetensors: 1 ids for 2 rows"),
    (lambda r: (_raw(r, 0, ["a"], np.ones((1, 2))), _raw(r, 1, ["b"], np.ones((1, 3)))),
     r"part-00001.safetensors: dimension 3 != 2 of .*part-00000.safetensors"),
    (_cut, r"part-00000.safetensors: truncated file"),
    (_huge, r"part-00000.safetensors: header length 9223372036854775808 exceeds the 2 bytes"),
    (_tiny, r"part-00000.safetensors: truncated safetensors file \(2 bytes"),
    (_garbage, r"part-00000.safetensors: unreadable safetensors header"),
])
def test_index_refuses_bad_shards_naming_file_row_and_id(tmp_path, make, msg):
    make(tmp_path / "emb")
    with pytest.raises(ShardError, match=msg): EmbeddingIndex(tmp_path / "emb")

def test_index_names_the_id_of_a_nan_row(tmp_path):
    _raw(tmp_path / "emb", 0, ["a", "b"], [[1.0, 0.0], [0.0, 1.0]]); _raw(tmp_path / "emb", 1, ["c", "d"], [[1.0, 2.0], [np.inf, 0.0]])
    idx = EmbeddingIndex(tmp_path / "emb")                              # opening stays cheap: values are checked per row
    assert idx["c"].tolist() == [1.0, 2.0]
    with pytest.raises(ShardError, match=r"part-00001.safetensors: non-finite value \(NaN/Inf\) in row 1 \(id 'd'\)"):
        idx.get_many(["a", "d"])

def test_second_image_token_is_refused_up_front(index, tmp_path):
    two = {**REC, "conversations": [{"from": "human", "value": "<image>\nLeft <image> or right?"}, {"from": "gpt", "value": "left"}]}
    with pytest.raises(RecordError, match=r"record 'r1' \(#0\): field 'conversations\[0\].value' holds a second <image>"):
        VLMDataset([two], tiny_tokenizer(), index)
    echo = {**REC, "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "an <image>"}]}
    good, bad = load_records([REC, two, echo], index, on_error="skip")
    assert [r["id"] for r in good] == ["r1"] and [b["reason"].split(": ", 1)[1] for b in bad] == [
        "field 'conversations[0].value' holds a second <image> (one image per record)",
        "field 'conversations[1].value' holds a second <image> (one image per record)"]

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
                    | st.sampled_from(["<image>", "human", "gpt", "A", "<image>\nQ?\nA. x\nB. y"]),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["from", "value", "x"]), kids, max_size=3),
                    max_leaves=8)
TURN = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt"]) | JSON, "value": JSON})
TEXT = st.lists(st.sampled_from(["<image>", "A. red", "B. blue", "\n", " ", "what", "?", "C", "\x00", "\u200b"]),
                min_size=1, max_size=5).map("".join)
MOSTLY = lambda good: st.one_of(good, good, good, JSON)                # a valid-looking value 3 times in 4
PAIR = st.tuples(MOSTLY(TEXT), MOSTLY(TEXT)).map(lambda qa: [{"from": "human", "value": qa[0]}, {"from": "gpt", "value": qa[1]}])
NEAR = st.fixed_dictionaries({"id": MOSTLY(st.sampled_from(["r1", "r2", 7])),
                              "conversations": st.lists(PAIR, min_size=1, max_size=3).map(lambda ps: sum(ps, []))},
                             optional={"image": MOSTLY(st.just("a")), "task_type": MOSTLY(st.sampled_from(["mc", "easyvqa"]))})
WILD = st.fixed_dictionaries({}, optional={"id": JSON, "image": JSON, "task_type": JSON,
                                           "conversations": st.lists(TURN | JSON, max_size=4) | JSON})
RECORD = st.one_of(JSON, WILD, NEAR, NEAR)                             # anything; a record-shaped thing; a near-record

TOK, EMB = tiny_tokenizer(), {"a": np.ones(4, np.float32)}        # a dict stands in for the index (`in` and `[]`)

@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(RECORD)
def test_check_record_takes_any_json_value(rec):
    try: assert check_record(rec) is rec
    except RecordError: return
    good, bad = load_records([rec], on_error="skip")                   # a record that passes also loads ...
    assert good == [rec] and bad == []
    if rec.get("image") and rec["image"] not in EMB:                  # ... and names an image the index lacks
        with pytest.raises(RecordError, match=r"field 'image' = .* has no embedding in a dict of 1 embeddings"):
            VLMDataset([rec], TOK, EMB, k=2, max_len=512)
        return
    ds = VLMDataset([rec], TOK, EMB, k=2, max_len=512, use_image=bool(rec.get("image")))   # ... or tokenises
    assert ds[0]["input_ids"].count(image_token_id(TOK)) in (0, 2)
