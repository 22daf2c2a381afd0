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
