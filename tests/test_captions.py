"Stage 1: filters, near-duplicates, statistics, and resume after an interrupted run gives exactly the uninterrupted result."
import json
import pytest
from unicorn.fixtures import tiny_llama
from unicorn.llm import TransformersBackend, LLMBackend
from unicorn.runs import JsonlShards
from unicorn.captions import (CaptionsConfig, run_captions, reject_reason, clean_caption, near_duplicates, caption_stats,
                              finalize_captions)

SEEDS = [{"id": f"seed-{i}", "seed": s, "domain": "demo", "source_image": f"train-img{i}", "label": s}
         for i, s in enumerate(["a red circle", "a blue square", "a green triangle", "a teal circle", "a gray rectangle",
                                "a brown triangle", "a black circle"])]
CFG = CaptionsConfig(shard_size=2, max_new_tokens=12, temperature=0.7, batch_size=2)

class Interrupting(LLMBackend):
    "Wraps a backend and dies (as a killed job would) on call number `die_on`."
    def __init__(self, inner, die_on):
        self.inner, self.die_on, self.calls = inner, die_on, 0
    def generate(self, *a, **kw):
        self.calls += 1
        if self.calls == self.die_on: raise KeyboardInterrupt("simulated interruption")
        return self.inner.generate(*a, **kw)

@pytest.fixture(scope="module")
def tiny():
    lm, tok = tiny_llama()
    return TransformersBackend(lm, tok, batch_size=2)

def _all(root):
    return ([r for r in JsonlShards(root / "captions_raw")], [r for r in JsonlShards(root / "captions")],
            [r for r in JsonlShards(root / "captions_rejected")], json.loads((root / "captions" / "stats.json").read_text())["counts"])

def test_resume_after_interrupt(tiny, tmp_path):
    full = run_captions(SEEDS, tiny, CFG, tmp_path / "full", progress=False)
    assert full["shards"] == {"items": 7, "shards": 4, "written": 4, "resumed": 0}
    dying = Interrupting(tiny, die_on=3)
    with pytest.raises(KeyboardInterrupt):
        run_captions(SEEDS, dying, CFG, tmp_path / "cut", progress=False)
    assert len(JsonlShards(tmp_path / "cut" / "captions_raw").shard_paths()) == 2     # shards 0, 1 complete; 2 lost
    counting = Interrupting(tiny, die_on=-1)
    resumed = run_captions(SEEDS, counting, CFG, tmp_path / "cut", progress=False)
    assert resumed["shards"] == {"items": 7, "shards": 4, "written": 2, "resumed": 2} and counting.calls == 2
    assert _all(tmp_path / "cut") == _all(tmp_path / "full")                            # nothing lost, nothing duplicated
    raw = _all(tmp_path / "full")[0]
    assert [r["seed_id"] for r in raw] == [s["id"] for s in SEEDS]

def test_filters_count_reasons():
    ok = ("A red circle is drawn in the centre of a square white canvas. The circle has a smooth edge and a flat, "
          "even red fill. A faint grey shadow lies under its lower edge.")
    raw = [{"id": f"c{i}", "seed_id": f"s{i}", "seed": "a red circle", "caption": c, "domain": "d", "source_image": None,
            "label": None, "reason": reject_reason(c, "a red circle", t, min_words=10), "raw": c, "truncated": t}
           for i, (c, t) in enumerate([(ok, False), (ok, False), ("", False), ("a red circle", False),
                                       ("The circle is red. " * 5, False), ("A red circle on white.", False),
                                       ("A blue triangle on a grey floor next to a chair and a lamp.", False)])]
    kept, rej, counts = finalize_captions(raw)
    assert counts == {"generated": 7, "kept": 1, "rejected": {"empty": 1, "prompt-echo": 1, "repetitive": 1,
                                                              "too-short": 1, "off-seed": 1, "near-duplicate": 1}}
    assert kept[0]["id"] == "c0" and next(r for r in rej if r["reason"] == "near-duplicate")["duplicate_of"] == "c0"

def test_clean_and_stats():
    assert clean_caption("Here is the caption: A red circle. It has")[0] == "A red circle."
    s = caption_stats(["one two three", "one one"])
    assert (s["words_mean"], s["words_min"], s["words_max"]) == (2.5, 2, 3) and abs(s["ttr_mean"] - 0.75) < 1e-9
    assert near_duplicates(["a b c d e f", "x y z w v u", "a b c d e f"]) == {2: 0}
