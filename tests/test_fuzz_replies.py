"Issue 13: fuzzed Stage 2 replies are a counted, kept-aside record, never a crash and never training data."
import json, random, unicodedata
from hypothesis import event, given, settings, strategies as st
from unicorn.llm import LLMBackend
from unicorn.instructions import (parse_reply, run_instructions, InstructionsConfig, _EXAMPLES, TASK_TYPES,
                                  qa_schema)
from unicorn.vlm_data import load_records
from unicorn.runs import JsonlShards

# --- an independent statement of the rules an accepted reply must keep (not the module's own helpers) ---
NOT_TEXT = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
BLANK = set("\u115f\u1160\u2800\u3164\uffa0")
LIMITS = {"question": 80, "option": 30, "open": 60, "reasoning": 120}

def clean(s, n) -> bool:
    "A string training may see: 1..n characters, visible text, nothing the schema forbids, encodable as UTF-8."
    return (isinstance(s, str) and 1 <= len(s) <= n and '"' not in s and "\\" not in s and "<image>" not in s
            and not any(unicodedata.category(c) in NOT_TEXT for c in s)
            and any(unicodedata.category(c)[0] in "LNPS" and c not in BLANK for c in s)
            and s.encode("utf-8") is not None)

def fit_for_training(items, task_type) -> bool:
    "Every QA pair has exactly its keys and clean strings; MC answers name one of four distinct options."
    for it in items:
        if task_type == "mc":
            opts = it["options"]
            if set(it) != {"question", "options", "answer"} or set(opts) != set("ABCD") or it["answer"] not in "ABCD":
                return False
            if len({o.strip().lower() for o in opts.values()}) < 4 or not all(clean(o, LIMITS["option"]) for o in opts.values()):
                return False
        elif set(it) != {"question", "answer"} or not clean(it["answer"], LIMITS[task_type]): return False
        if not clean(it["question"], LIMITS["question"]): return False
    return True

def no_duplicate_keys(text) -> bool:
    def hook(pairs):
        assert len({k for k, _ in pairs}) == len(pairs), "duplicate key"
        return dict(pairs)
    try: json.JSONDecoder(object_pairs_hook=hook).raw_decode(text[text.find("["):]); return True
    except AssertionError: return False

def check_parse(text, task_type):
    "parse_reply never raises; what it accepts keeps every rule."
    items, why = parse_reply(text, task_type)
    event(f"reason: {str(why).split(' at ')[0]}")
    assert (items is None) != (why is None)
    if items is not None:
        assert fit_for_training(items, task_type), (text, items)
        assert no_duplicate_keys(text), text
        json.dumps(items, ensure_ascii=False).encode("utf-8")
    return why

# --- strategies ---
ANY_CHAR = st.characters(exclude_categories=())                     # every code point, lone surrogates included
NASTY = ["\x00", "\x1b", "\x1b[31m", "\n", "\r\n", "\t", "\x7f", "\x85", "\u00ad", "\u200b", "\u200d", "\u202e", "\u2066",
         "\u2028", "\ufeff", "\U000e0041", "\ue000", "\u0378", "\u2800", "\u3164", "\u0301", "\ud800", "\udfff", "<image>",
         "\\", '"', " ", "\u00a0", "\u3000", "A. ", "(B) ", "\n<image>\n"]
WORDS = "red circle square the a what colour is on left right why because table apple Yes. No. B".split()
piece = st.one_of(st.sampled_from(WORDS), st.sampled_from(NASTY), st.text(ANY_CHAR, max_size=3))
fuzz_string = st.lists(piece, max_size=6).map(" ".join)
FIELDS = {"question", "answer", "options", "A", "B", "C", "D", "extra"}

MUTATIONS = ["none"] * 8 + ["prose", "dup-key", "truncate", "nest", "big-int", "nan", "insert", "newline", "items"]

@st.composite
def fuzzed_reply(draw):
    "A worked example's reply with up to three strings changed, serialised, then (sometimes) mutated as text."
    t = draw(st.sampled_from(TASK_TYPES))
    items = json.loads(json.dumps(_EXAMPLES[t]))
    for _ in range(draw(st.integers(0, 3))):
        it = items[draw(st.integers(0, len(items) - 1))]
        key = draw(st.sampled_from(["question", "options" if t == "mc" else "answer"]))
        if key == "options": it["options"][draw(st.sampled_from("ABCD"))] = draw(fuzz_string)
        else: it[key] = draw(fuzz_string)
    text = json.dumps(items, ensure_ascii=draw(st.booleans()))
    m = draw(st.sampled_from(MUTATIONS))
    if m == "prose": text = draw(fuzz_string) + text + draw(fuzz_string)
    elif m == "dup-key": text = text.replace('"question": ', '"question": "x", "question": ', 1)
    elif m == "truncate": text = text[:draw(st.integers(0, len(text)))]
    elif m == "nest": text = "[" * draw(st.integers(1, 6000)) + text
    elif m == "big-int": text = text.replace('"question": ', '"question": ' + "9" * draw(st.integers(1, 6000)) + ', "q": ', 1)
    elif m == "nan": text = text.replace('"B"', "NaN", 1)
    elif m == "insert":
        i = draw(st.integers(0, len(text))); text = text[:i] + draw(st.sampled_from(NASTY)) + text[i:]
    elif m == "newline": text = text.replace('."', '.\\n"', 1)
    elif m == "items": text = json.dumps(items[:draw(st.integers(0, 5))] + [{"question": "q", "extra": 1}] * draw(st.integers(0, 3)))
    return text, t

@settings(max_examples=3500, deadline=None, database=None)
@given(fuzzed_reply())
def test_fuzzed_json_replies_never_crash_never_pass_bad_data(reply):
    check_parse(*reply)

@settings(max_examples=2500, deadline=None, database=None)
@given(st.sampled_from(TASK_TYPES), st.text(ANY_CHAR, max_size=8), st.integers(0, 2000), st.integers(0, 3))
def test_any_text_spliced_into_a_reply_never_crashes(task_type, text, at, cut):
    "Any characters (lone surrogates included) spliced into a valid reply, raw or JSON-escaped, replacing 0-3 characters."
    good = json.dumps(_EXAMPLES[task_type], ensure_ascii=False)
    at = at % (len(good) + 1)
    for piece in (text, json.dumps(text)[1:-1]):
        check_parse(good[:at] + piece + good[at + cut:], task_type)

# --- Stage 2 end to end against a stand-in LLM that only fuzzes ---
class FuzzingLLM(LLMBackend):
    "Replies with a worked example mutated at random (seeded): changed strings, keys, nesting, truncation, bad characters."
    name = "fuzzing"
    def __init__(self, seed=0): self.rng = random.Random(seed)
    def reply(self, task_type):
        rng, items = self.rng, json.loads(json.dumps(_EXAMPLES[task_type]))
        for it in items:
            if rng.random() < 0.3:
                key = rng.choice(sorted(it))
                val = "".join(rng.choice(NASTY + WORDS) for _ in range(rng.randint(0, 4)))
                if key == "options": it["options"][rng.choice("ABCD")] = val
                else: it[key] = val
        text = json.dumps(items, ensure_ascii=rng.random() < 0.5)
        r = rng.random()
        if r < 0.1: text = text.replace('"answer": ', '"answer": "x", "answer": ', 1)
        elif r < 0.2: text = text[:rng.randint(0, len(text))]
        elif r < 0.25: text = "[" * 5000 + text
        elif r < 0.35: text = text.replace('."', '.\\n"', 1)
        return text
    def generate(self, prompts, sampling=None, json_schema=None, reply_prefix=""):
        types = {json.dumps(qa_schema(t, 6, 6)): t for t in TASK_TYPES}
        return [self.reply(types[json.dumps(s)]) for s in json_schema]

def test_stage2_on_fuzzed_replies_finishes_and_writes_only_clean_records(tmp_path):
    caps = [{"id": f"cap-{i}", "caption": "A green apple on a wooden table next to a white mug."} for i in range(60)]
    cfg = InstructionsConfig(shard_size=8, max_retries=2, max_pairs=6)
    st_ = run_instructions(caps, FuzzingLLM(), cfg, tmp_path, progress=False)
    assert st_["captions"] == 60 and st_["valid"] > 5 and st_["rejected"] > 5 and st_["attempts"] > 60
    path = tmp_path / "instructions" / "llava.json"
    good, bad = load_records(path)                          # on_error='raise': one bad record would raise
    assert len(good) == st_["valid"] and bad == []
    for r in good:
        for k, turn in enumerate(r["conversations"]):
            body = turn["value"].removeprefix("<image>\n") if k == 0 else turn["value"]
            assert all(clean(line, 400) for line in body.split("\n")), turn
    raw = list(JsonlShards(tmp_path / "instructions_raw"))
    rejected = [json.loads(l) for l in (tmp_path / "instructions" / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == st_["rejected"] and all(r["status"] == "rejected" and r["errors"] for r in rejected)
    assert all(fit_for_training(r["qa"], r["task_type"]) for r in raw if r["status"] == "ok")
    again = run_instructions(caps, FuzzingLLM(seed=1), cfg, tmp_path, progress=False)    # resume: every shard is done
    assert again["shards"]["resumed"] == again["shards"]["shards"] and again["valid"] == st_["valid"]
