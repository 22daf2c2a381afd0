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
CFG = CaptionsConfig(shard_size=2, max_new_tokens=12, temperature=0.7, batch_size=2, max_retries=0)   # one call per shard

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

# --- attribute consistency (issue 11): property-based tests of the matcher, and the reasons in stats.json ---
import random
import numpy as np
from hypothesis import given, settings, strategies as st
from unicorn.captions import attribute_vocab, attribute_check, find_attributes
from unicorn.packaged import EASYVQA_SHAPES, EASYVQA_COLORS

V = attribute_vocab("easyvqa")
NEUTRAL = ("the a an shape object sits on plain white canvas square with smooth edges in centre of picture flat fill small "
           "large bright dark reddish around background and is drawn light thin middle near top left right it its").split()
FORMS = {g: {c: sorted(f for f, cc in forms.items() if cc == c) for c in set(forms.values())} for g, forms in V.items()}

def test_neutral_words_are_neutral():
    assert not any(find_attributes(" ".join(NEUTRAL), V).values())
    assert set(FORMS["color"]) == set(EASYVQA_COLORS) and set(FORMS["shape"]) == set(EASYVQA_SHAPES)

seeds_st = st.tuples(st.sampled_from(EASYVQA_COLORS), st.sampled_from(EASYVQA_SHAPES),
                     st.sampled_from(["a {} {}", "a photo of a {} {}, a type of geometric shape.", "A close-up picture of a {} {}."]))

def _caption(data, color, shape):
    "The seed's attributes in any of their forms, plus neutral words, shuffled, in random case."
    ws = [data.draw(st.sampled_from(FORMS["color"][color])), data.draw(st.sampled_from(FORMS["shape"][shape]))]
    ws += data.draw(st.lists(st.sampled_from(NEUTRAL), max_size=30))
    ws = data.draw(st.permutations(ws))
    return " ".join(w.upper() if data.draw(st.booleans()) else w for w in ws) + "."

@settings(max_examples=200, deadline=None)
@given(seeds_st, st.data())
def test_seed_words_plus_neutral_words_always_kept(seed, data):
    color, shape, tpl = seed
    assert attribute_check(_caption(data, color, shape), tpl.format(color, shape), V) is None

@settings(max_examples=200, deadline=None)
@given(seeds_st, st.sampled_from(["color", "shape"]), st.data())
def test_any_conflicting_attribute_always_rejects(seed, group, data):
    color, shape, tpl = seed
    own = color if group == "color" else shape
    other = data.draw(st.sampled_from(sorted(c for c in FORMS[group] if c != own)))
    ws = _caption(data, color, shape).rstrip(".").split(" ")
    ws.insert(data.draw(st.integers(0, len(ws))), data.draw(st.sampled_from(FORMS[group][other])))
    assert attribute_check(" ".join(ws), tpl.format(color, shape), V) == "attribute-conflict"

@settings(max_examples=100, deadline=None)
@given(seeds_st, st.sampled_from(["color", "shape"]), st.data())
def test_dropping_a_seed_attribute_is_missing(seed, group, data):
    color, shape, tpl = seed
    ws = [w for w in _caption(data, color, shape).rstrip(".").split(" ")
          if find_attributes(w, V)[group] == set()]                     # remove every form of that group's word
    assert attribute_check(" ".join(ws), tpl.format(color, shape), V) == "attribute-missing"

class SeedReplies(LLMBackend):
    "Answers each caption prompt with the reply scripted for its seed."
    def __init__(self, replies): self.replies = replies
    def generate(self, prompts, sampling=None, json_schema=None, reply_prefix=""):
        return [self.replies[p[-1]["content"].removeprefix("Seed: ")] for p in prompts]

FAITHFUL = ("A red circle is drawn in the centre of a plain white canvas. The circle has a smooth edge and a flat, even "
            "red fill, and nothing else is in the picture.")
REPAINTED = ("A bright pink rectangle full of small red boxes sits on a wooden table next to a window, with soft light "
             "falling across its edges and a plain wall behind it.")

def test_consistency_reasons_counted_in_stats(tmp_path):
    seeds = [{"id": "s0", "seed": "a red circle"}, {"id": "s1", "seed": "a black rectangle"}]
    be = SeedReplies({"a red circle": FAITHFUL, "a black rectangle": REPAINTED})
    st_ = run_captions(seeds, be, CaptionsConfig(min_words=10), tmp_path / "on", progress=False)
    saved = json.loads((tmp_path / "on" / "captions" / "stats.json").read_text())
    assert saved["counts"] == {"generated": 2, "kept": 1, "rejected": {"attribute-conflict": 1}} == st_["counts"]
    assert saved["consistency"]["attribute_vocab"] == "easyvqa" and saved["consistency"]["keep_rate"] == 0.5
    assert saved["consistency"]["replies"] == 4 and saved["consistency"]["rejected_replies"] == {"attribute-conflict": 3}
    off = run_captions(seeds, be, CaptionsConfig(min_words=10, attribute_vocab=None), tmp_path / "off", progress=False)
    assert off["counts"]["kept"] == 2                                   # the paper default: no vocabulary, no check

def test_seed_similarity_check_with_stub_encoder(tmp_path):
    seeds = [{"id": "s0", "seed": "a red circle"}, {"id": "s1", "seed": "a red circle on white"}]
    be = SeedReplies({"a red circle": FAITHFUL, "a red circle on white":
        "A small red circle lies near the top of a white picture. Its fill is flat and even, and its round edge is crisp and clean."})
    enc = lambda texts: np.array([[len(t) > 30, 1.0] for t in texts], dtype=float)   # seeds ~ (0,1), captions ~ (1,1)
    cfg = CaptionsConfig(min_words=10, min_seed_similarity=0.9)
    st_ = run_captions(seeds, be, cfg, tmp_path, progress=False, encoder=enc)
    assert st_["counts"]["rejected"] == {"seed-dissimilar": 2}           # cosine 0.71 < 0.9
    st2 = run_captions(seeds, be, CaptionsConfig(min_words=10, min_seed_similarity=0.7), tmp_path / "b", progress=False, encoder=enc)
    assert st2["counts"]["kept"] == 2

def test_resume_with_retries_gives_the_uninterrupted_result(tiny, tmp_path):
    cfg = CaptionsConfig(shard_size=2, max_new_tokens=8, temperature=0.9, batch_size=2, max_retries=1)
    run_captions(SEEDS, tiny, cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_captions(SEEDS, Interrupting(tiny, die_on=4), cfg, tmp_path / "cut", progress=False)   # dies in shard 1's retry
    run_captions(SEEDS, tiny, cfg, tmp_path / "cut", progress=False)
    assert _all(tmp_path / "cut") == _all(tmp_path / "full")
    assert all(r["attempts"] == 2 for r in _all(tmp_path / "full")[0])          # gibberish: every seed asked twice

# --- issue 13: characters that are not text are rejected with a reason and never written ---
from hypothesis import event
from unicorn.captions import text_problem, judge_reply, storable

NOT_TEXT = {"\x00": "control-characters", "\x1b[31m": "control-characters", "\x7f": "control-characters",
            "\u2028": "control-characters", "\u202e": "invisible-characters", "\u2066": "invisible-characters",
            "\u200b": "invisible-characters", "\ufeff": "invisible-characters", "\U000e0041": "invisible-characters",
            "\ud800": "lone-surrogate", "\udfff": "lone-surrogate"}

@pytest.mark.parametrize("bad", sorted(NOT_TEXT))
def test_caption_with_non_text_character_rejected(bad):
    cap = FAITHFUL.replace("smooth", "smo" + bad + "oth")
    assert reject_reason(cap, "a red circle", min_words=10) == NOT_TEXT[bad]
    cleaned, _, why = judge_reply(cap, "a red circle", min_words=10)     # a reply is cleaned first: whitespace is
    assert why == (None if bad.isspace() else NOT_TEXT[bad])              # normalised, so U+2028 becomes a space
    assert bad not in cleaned or why
    assert reject_reason(FAITHFUL, "a red circle", min_words=10) is None

def test_invisible_only_caption_is_empty():
    assert reject_reason("\u2800 \u3164 \u0301", "a red circle") == "empty"
    assert text_problem("\u00a0\u3000") == "blank" and text_problem("Äpfel 🍎.") is None

class Poisoning(LLMBackend):
    "Answers every seed with a faithful caption carrying one poisoned character, forever."
    def __init__(self, bad): self.bad, self.calls = bad, 0
    def generate(self, prompts, sampling=None, json_schema=None, reply_prefix=""):
        self.calls += 1
        return [FAITHFUL.replace("smooth", "smo" + self.bad + "oth") for _ in prompts]

@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\u202e", "\u200b", "\ud800"])
def test_poisoned_captions_counted_never_written(tmp_path, bad):
    "Stage 1 finishes (first try and resume); every reply is rejected with its reason; no shard holds the character."
    seeds = [{"id": f"s{i}", "seed": "a red circle"} for i in range(3)]
    cfg = CaptionsConfig(min_words=10, shard_size=2, max_retries=2)
    st_ = run_captions(seeds, Poisoning(bad), cfg, tmp_path, progress=False)
    assert st_["counts"] == {"generated": 3, "kept": 0, "rejected": {NOT_TEXT[bad]: 3}}
    assert st_["consistency"]["rejected_replies"] == {NOT_TEXT[bad]: 9}                  # 1 + 2 retries each
    assert len(JsonlShards(tmp_path / "captions")) == 0 and len(JsonlShards(tmp_path / "captions_rejected")) == 3
    for f in tmp_path.rglob("*.jsonl"): f.read_bytes().decode("utf-8")                     # every shard is valid UTF-8
    assert not any(bad in r["caption"] for r in JsonlShards(tmp_path / "captions"))        # kept aside, never a caption
    be = Poisoning(bad)
    again = run_captions(seeds, be, cfg, tmp_path, progress=False)
    assert again["shards"]["resumed"] == 2 and be.calls == 0 and again["counts"] == st_["counts"]

def test_missing_or_non_string_replies_are_reasons(tmp_path):
    class Odd(LLMBackend):
        def generate(self, prompts, sampling=None, json_schema=None, reply_prefix=""): return [None, b"x"][:len(prompts)]
    st_ = run_captions([{"id": f"s{i}", "seed": "a red circle"} for i in range(3)], Odd(),
                       CaptionsConfig(shard_size=3, max_retries=0), tmp_path, progress=False)
    assert st_["counts"]["rejected"] == {"not-text": 3}

@settings(max_examples=2500, deadline=None, database=None)
@given(st.lists(st.one_of(st.sampled_from(FAITHFUL.split() + list(NOT_TEXT) + ["\n\n", "Caption:", "\u00a0", "\u2800"]),
                          st.text(st.characters(exclude_categories=()), max_size=3)), max_size=40).map(" ".join))
def test_any_reply_gives_a_reason_or_a_clean_caption(reply):
    "judge_reply never raises; a kept caption is visible text only and encodes as UTF-8; the stored reply always does."
    cap, _, why = judge_reply(reply, "a red circle", min_words=5)
    event(f"reason: {why}")
    if why is None:
        assert text_problem(cap) is None and cap.encode("utf-8")
        assert not any(c in cap for c in NOT_TEXT)
    storable(reply).encode("utf-8")
