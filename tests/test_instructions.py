"Stage 2: schema validation, bounded retries, rejected replies kept aside, constrained decoding, LLaVA output."
import json
import pytest
from unicorn.fixtures import tiny_llama
from unicorn.llm import TransformersBackend, Sampling
from unicorn.instructions import (parse_reply, generate_qa, run_instructions, InstructionsConfig, ScriptedBackend,
                                  qa_schema, check_llava, _EXAMPLES, faithfulness)

GOOD = {t: json.dumps(v) for t, v in _EXAMPLES.items()}

@pytest.mark.parametrize("reply,reason", [
    ("", "not-json"), ("I cannot do that", "not-json"), (GOOD["open"][:40], "not-json"),
    (json.dumps(_EXAMPLES["open"][:5]), "schema: minItems at []"),
    (json.dumps(_EXAMPLES["open"] * 2), "schema: maxItems at []"),
    (json.dumps([{"question": "q"}] * 6), "schema: required at [0]"),
    (json.dumps([{"question": "q", "answer": 3}] * 6), "schema: type at [0/answer]"),
    (json.dumps([{"question": "q", "answer": "a", "extra": 1}] * 6), "schema: additionalProperties at [0]"),
    (json.dumps([{"question": "q", "answer": "   "}] * 6), "empty-text"),
    ('{"question": "q"}', "not-json"),
])
def test_malformed_replies_rejected(reply, reason):
    assert parse_reply(reply, "open") == (None, reason)

def test_valid_replies_parse():
    for t, g in GOOD.items():
        items, err = parse_reply("Here you go:\n" + g + "\nDone.", t)
        assert err is None and len(items) == 6

def test_bounded_retry():
    caps = [{"id": "a", "caption": "x", "task_type": "mc"}, {"id": "b", "caption": "y", "task_type": "open"}]
    sb = ScriptedBackend(["broken", GOOD["open"], GOOD["mc"][:-1], "[1, 2]", "nope"])
    out = generate_qa(caps, sb, Sampling(), max_retries=1)
    # attempt 1: mc broken, open ok; attempt 2: mc truncated -> rejected after 1 + 1 attempts; nothing more asked
    assert [o["status"] for o in out] == ["rejected", "ok"]
    assert out[0]["attempts"] == 2 and out[0]["errors"] == ["not-json", "not-json"]
    assert len(sb.script) == 2                    # the bound held: two replies were never requested

def test_rejected_never_becomes_training_data(tmp_path):
    caps = [{"id": f"cap-{i}", "caption": "A green apple on a wooden table next to a white mug."} for i in range(3)]
    sb = ScriptedBackend([GOOD["open"], '[{"question": "q", "answer": "a"}]', "{{{"] + ["{{{"] * 4)
    cfg = InstructionsConfig(mc_frac=0, reasoning_frac=0, shard_size=3, max_retries=2)
    st = run_instructions(caps, sb, cfg, tmp_path, progress=False)
    assert (st["valid"], st["rejected"], st["captions"]) == (1, 2, 3)
    assert st["errors"] == {"schema: minItems": 1, "not-json": 5}
    llava = json.loads((tmp_path / "instructions" / "llava.json").read_text())
    check_llava(llava)
    assert [r["image"] for r in llava] == ["cap-0"] and llava[0]["conversations"][0]["value"].startswith("<image>\n")
    rej = [json.loads(l) for l in (tmp_path / "instructions" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["caption_id"] for r in rej) == ["cap-1", "cap-2"] and all(r["attempts"] == 3 for r in rej)

def test_constrained_transformers_replies_always_parse():
    "A random tiny model under the schema (1 item, so it fits the token budget) always yields a valid reply."
    lm, tok = tiny_llama()
    be = TransformersBackend(lm, tok, batch_size=3)
    caps = [{"id": f"c{i}", "caption": "a red circle", "task_type": t} for i, t in enumerate(["mc", "open", "reasoning"])]
    out = generate_qa(caps, be, Sampling(max_new_tokens=400), max_retries=0, min_items=1, max_items=1)
    import jsonschema
    for o in out:                                  # every reply parses and obeys its schema ...
        jsonschema.validate(json.loads(o["reply"]), qa_schema(o["task_type"], 1, 1))
        assert not any(e.startswith(("not-json", "schema")) for e in o["errors"])
    # ... though content checks may still reject a random model's reply (e.g. four identical MC options)
    assert {o["errors"][0] for o in out if o["status"] != "ok"} <= {"duplicate-options", "empty-text"}
    unc = generate_qa(caps, be, Sampling(max_new_tokens=40), max_retries=0, constrained=False, min_items=1, max_items=1)
    assert [o["status"] for o in unc] == ["rejected"] * 3          # the same model unconstrained: gibberish

def test_faithfulness_check():
    cap = "A red circle sits on a white background."
    res = [{"caption_id": "c", "task_type": "open", "status": "ok",
            "qa": [{"question": "What colour?", "answer": "Red."}, {"question": "What shape?", "answer": "A blue square."}]}]
    f = faithfulness(res, {"c": cap})
    assert f["open"]["checked"] == 2 and f["open"]["supported_frac"] == 0.5

# --- issue 13: a bad reply is a counted, kept-aside record, never a crash and never training data ---
from unicorn.instructions import qa_problem, recheck
from unicorn.runs import JsonlShards
from unicorn.vlm_data import load_records

def _open_with(**kw):
    "The worked open-VQA reply with its first pair's fields replaced (as JSON text; ASCII escapes for odd characters)."
    return json.dumps([dict(_EXAMPLES["open"][0], **kw)] + _EXAMPLES["open"][1:])

@pytest.mark.parametrize("reply,reason", [
    ("[" * 5000, "not-json"),                                                # was RecursionError
    ("[" + "9" * 5000 + "]", "not-json"),                                    # was ValueError: int too long
    (b"[]", "not-text"), (None, "not-text"), (["[]"], "not-text"),            # was TypeError / AttributeError
    (GOOD["open"].replace('"White."', "NaN"), "not-json"),
    (GOOD["open"].replace('"answer": "White."', '"answer": "Red.", "answer": "White."'), "duplicate-keys"),  # last won
    (_open_with(answer="abc\n"), "schema: pattern at [0/answer]"),           # Python's `$` let the newline through
    (_open_with(answer="\x00red"), "schema: pattern at [0/answer]"),
    (_open_with(answer="\x1b[31mred"), "schema: pattern at [0/answer]"),
    (_open_with(answer="red\x85"), "schema: pattern at [0/answer]"),         # C1 control
    (_open_with(answer="abc\u202edcba"), "schema: pattern at [0/answer]"),   # bidi override
    (_open_with(answer="a\u200bb"), "schema: pattern at [0/answer]"),        # zero-width space
    (_open_with(answer="\u200b\u200b"), "schema: pattern at [0/answer]"),    # invisible only
    (_open_with(answer="\u2800\u3164"), "empty-text"),                       # blank look-alikes only
    (_open_with(answer="\u0301"), "empty-text"),                             # a lone combining mark
    (_open_with(answer="red\U000e0041"), "invisible-characters"),            # a tag character
    (_open_with(answer="red\ue000"), "invisible-characters"),                # private use
    (_open_with(answer="a\ud800"), "lone-surrogate"),                        # escaped: would crash the shard write
    (json.dumps([dict(_EXAMPLES["open"][0], answer="a\ud800")] + _EXAMPLES["open"][1:], ensure_ascii=False), "lone-surrogate"),
    (_open_with(question="What is <image>?"), "image-token"),                # would stop the stage in check_llava
])
def test_fuzz_findings_are_reasons(reply, reason):
    assert parse_reply(reply, "open") == (None, reason)

def test_mc_rules_apply_to_every_option():
    mc = lambda **o: json.dumps([dict(_EXAMPLES["mc"][0], options={**_EXAMPLES["mc"][0]["options"], **o})] + _EXAMPLES["mc"][1:])
    assert parse_reply(mc(C="green\n"), "mc") == (None, "schema: pattern at [0/options/C]")
    assert parse_reply(mc(C="\u2800"), "mc") == (None, "empty-text")
    assert parse_reply(mc(C="a\udc80"), "mc") == (None, "lone-surrogate")

def test_record_training_would_refuse_is_rejected():
    "An open question that reads like an option, answered with another letter: check_record would stop training."
    confusing = json.dumps([{"question": f"A) left or right {i}?", "answer": "B. Right."} for i in range(6)])
    items, err = parse_reply(confusing, "open")
    assert err is None and qa_problem("cap-0", "open", items) == "invalid-record"
    out = generate_qa([{"id": "cap-0", "caption": "x", "task_type": "open"}], ScriptedBackend([], forever=confusing),
                      Sampling(), max_retries=1)
    assert out[0]["status"] == "rejected" and out[0]["errors"] == ["invalid-record"] * 2

def test_retries_sample_with_a_new_seed_each():
    sb = ScriptedBackend([], forever="nope")
    generate_qa([{"id": "a", "caption": "x", "task_type": "open"}], sb, Sampling(temperature=0.0, seed=5), max_retries=2)
    assert [(s.temperature, s.seed) for s in sb.samplings] == [(0.0, 5), (0.7, 5 + 7919), (0.7, 5 + 2 * 7919)]
    with pytest.raises(ValueError, match="retries must sample"):
        generate_qa([], sb, Sampling(), max_retries=1, retry_temperature=0.0)

def test_missing_replies_are_rejected_not_lost():
    class Short(ScriptedBackend):
        def generate(self, prompts, *a, **kw): return [GOOD["open"]][:len(prompts) - 1]
    out = generate_qa([{"id": i, "caption": "x", "task_type": "open"} for i in "ab"], Short([]), Sampling(), max_retries=1)
    assert [o["status"] for o in out] == ["ok", "rejected"] and out[1]["errors"] == ["not-text"] * 2

POISONS = {"lone-surrogate": _open_with(answer="a\ud800"),             # crashed the shard write (data.encode)
           "not-json": "[" * 5000,                                   # RecursionError
           "image-token": _open_with(question="What is <image>?"),   # check_llava stopped the whole stage
           "invalid-record": json.dumps([{"question": f"A) left or right {i}?", "answer": "B. Right."} for i in range(6)])}

@pytest.mark.parametrize("reason", sorted(POISONS))
def test_poisoned_prompt_forever_stage_finishes_and_resumes(tmp_path, reason):
    "A stand-in LLM returns the same poisoned reply forever for one caption: the stage finishes, first try and resume."
    caps = [{"id": f"cap-{i}", "caption": "A green apple on a wooden table next to a white mug."} for i in range(3)]
    cfg = InstructionsConfig(mc_frac=0, reasoning_frac=0, shard_size=2, max_retries=2)
    be = ScriptedBackend([GOOD["open"]] + [POISONS[reason]] * 3 + [GOOD["open"]], forever=POISONS[reason])   # cap-1: 3 tries
    st_ = run_instructions(caps, be, cfg, tmp_path, progress=False)
    assert (st_["valid"], st_["rejected"], st_["errors"]) == (2, 1, {reason: 3})
    good, bad = load_records(tmp_path / "instructions" / "llava.json")
    assert len(good) == 2 and bad == []
    rej = [json.loads(l) for l in (tmp_path / "instructions" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["caption_id"], r["errors"]) for r in rej] == [("cap-1", [reason] * 3)]
    again = run_instructions(caps, ScriptedBackend([], forever=POISONS[reason]), cfg, tmp_path, progress=False)
    assert again["shards"] == {"items": 3, "shards": 2, "written": 0, "resumed": 2}
    assert (again["valid"], again["rejected"], again["errors"]) == (2, 1, {reason: 3})

def test_resumed_shards_from_a_lenient_run_are_rechecked(tmp_path):
    "Raw shards an older run accepted (invisible answer, duplicate-key leftovers) never reach llava.json."
    ok = {"caption_id": "cap-0", "task_type": "open", "status": "ok", "qa": _EXAMPLES["open"], "attempts": 1, "errors": [], "reply": ""}
    blank = {**ok, "caption_id": "cap-1", "qa": [dict(_EXAMPLES["open"][0], answer="\u200b\u200b")] + _EXAMPLES["open"][1:]}
    newline = {**ok, "caption_id": "cap-2", "qa": [dict(_EXAMPLES["open"][0], answer="Red.\n")] + _EXAMPLES["open"][1:]}
    JsonlShards(tmp_path / "instructions_raw").write(0, [ok, blank, newline])
    caps = [{"id": f"cap-{i}", "caption": "x"} for i in range(3)]
    cfg = InstructionsConfig(mc_frac=0, reasoning_frac=0, shard_size=3)
    st_ = run_instructions(caps, ScriptedBackend([]), cfg, tmp_path, progress=False)          # nothing is generated
    assert (st_["valid"], st_["rejected"]) == (1, 2) and st_["errors"] == {"schema: pattern": 2}
    assert [r["image"] for r in json.loads((tmp_path / "instructions" / "llava.json").read_text())] == ["cap-0"]
    assert recheck(blank)["status"] == "rejected" and recheck(ok) is ok
