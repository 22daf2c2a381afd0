"Issue 14, part 1: the `paper` preset's Stage 1/2 prompts, task mix and CLIPScore are the papers'; `mini` is unchanged."
import hashlib, json, re, unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from unicorn.config import resolve_config
from unicorn import captions as C, instructions as I, synthvlm as S
from unicorn.llm import LLMBackend

CAPTION = "A ferry, painted white with blue and red trim, departs a busy port under a clear sky."

def paper(presets, **kw): return resolve_config(presets, "paper", **kw)
def mini(presets, **kw): return resolve_config(presets, "mini", **kw)

# --- Stage 1 -------------------------------------------------------------------------------------------------------

def test_stage1_paper_prompt_is_the_papers_zero_shot_prompt():
    chat = C.caption_chat("a ferry departs a port", paper(C.PRESETS).caption_prompt)
    assert [m["role"] for m in chat] == ["user"]                          # zero-shot: no system rule, no worked example
    text = chat[0]["content"]
    assert text.startswith("Please expand the given image caption to include observable, objective, and reasonable details")
    assert "focus especially on depicting the detailed features of the primary subject" in text
    assert text.endswith("The image caption is as follows: a ferry departs a port")
    assert not re.search(r"\d|\bwords?\b|at most|no more than|sentences", text)   # no length cap of any kind
    assert C.PRESETS["paper"].attribute_vocab is None and C.PRESETS["paper"].max_retries == 0

MINI_SYSTEM = ("You write captions for images. Rewrite the short seed caption into ONE paragraph of 60 to 120 words that "
               "describes only what can be seen in the picture: the objects, their colours, shapes, sizes, positions, "
               "materials, the lighting and the background. Keep every fact in the seed and add plausible visual details "
               "that do not contradict it. Be objective and literal: no feelings, no stories, no metaphors, no opinions, "
               "no sounds or smells. Output only the paragraph.")
MINI_SEED_WORDS = " Begin the paragraph with the seed's own words and describe only that one object."

def test_stage1_mini_prompt_unchanged():
    cfg = mini(C.PRESETS)
    assert cfg.caption_prompt == "seed-words" and (cfg.min_words, cfg.max_words, cfg.max_new_tokens) == (20, 400, 128)
    chat = C.caption_chat("a red circle", cfg.caption_prompt)
    assert chat == [{"role": "system", "content": MINI_SYSTEM + MINI_SEED_WORDS},
                    {"role": "user", "content": "Seed: " + C.CAPTION_EXAMPLE[0]},
                    {"role": "assistant", "content": C.CAPTION_EXAMPLE[1]},
                    {"role": "user", "content": "Seed: a red circle"}]
    assert C.caption_messages("a red circle") == C.caption_chat("a red circle", "default")   # the old default call
    assert chat == C.caption_messages("a red circle", system=C.caption_prompt("seed-words"))
    # the whole chat, byte for byte, as before issue 14
    assert hashlib.sha256(json.dumps(chat).encode()).hexdigest() == \
        "1b6a9e37598909ffbfe21fd737c04fdd9409373b10fe20c96a0920edb3c8d9d9"

# --- Stage 2 -------------------------------------------------------------------------------------------------------

def test_stage2_paper_prompts_ask_for_6_to_8_pairs_without_length_caps():
    cfg = paper(I.PRESETS)
    assert cfg.prompt_style == "paper" and (cfg.min_pairs, cfg.max_pairs) == (6, 8)
    for t in I.TASK_TYPES:
        msgs = I.qa_messages(CAPTION, t, cfg.prompt_style)
        assert [m["role"] for m in msgs] == ["user"]
        text = msgs[0]["content"]
        assert text.startswith("You MUST ONLY output valid JSON. Generate nothing but JSON!")
        assert text.endswith("The image caption is as follows: " + CAPTION)
        assert set(re.findall(r"\d+", text)) <= {"6", "8"}                      # the only numbers: "6 to 8"
        assert not re.search(r"\bcharacters?\b|\bwords?\b|at most|no more than|short answer", text)
        if t in ("mc", "open"): assert "exactly 6 to 8" in text
        else: assert "comprehensive, step-by-step solutions" in text
        sch = I.qa_schema(t, cfg.min_pairs, cfg.max_pairs, cfg.prompt_style)
        pairs = sch["properties"]["QA Pairs"]
        assert (pairs["minItems"], pairs["maxItems"]) == (6, 8)                 # reasoning included (its prompt names no count)
        assert "{1," not in json.dumps(pairs)                                   # no string in a QA pair has a length cap

def paper_reply(task_type, n=7, answer_chars=480, option_chars=51):
    "A reply in the paper's form: long step-by-step answers, options as long as the paper's own example."
    def item(k):
        if task_type == "mc":
            return {"Question": f"What is shown in part {k} of the scene?",
                    "Options": {l: (f"Option {l}{k} " + "x" * option_chars)[:option_chars] for l in "ABCD"}, "Answer": "C"}
        return {"Question": f"Why is detail {k} there?", "Answer": (f"Step {k}: the caption states " + "y " * answer_chars)[:answer_chars]}
    return json.dumps({"id": "0", "QA Pairs": [item(k) for k in range(n)]})

@pytest.mark.parametrize("task_type", I.TASK_TYPES)
def test_full_length_paper_replies_are_kept_and_mini_caps_still_hold(task_type):
    items, why = I.parse_reply(paper_reply(task_type), task_type, 6, 8, style="paper")
    assert why is None and len(items) == 7
    assert I.qa_problem("cap-1", task_type, items, "paper") is None
    if task_type == "mc": assert {len(o) for o in items[0]["options"].values()} == {51}
    else: assert len(items[0]["answer"]) == 480
    assert I.qa_problem("cap-1", task_type, items) is not None                    # mini's caps: too long
    for n in (5, 9):
        assert I.parse_reply(paper_reply(task_type, n), task_type, 6, 8, style="paper")[1].startswith("schema: m")

class ByTaskBackend(LLMBackend):
    "Answers each paper prompt with a paper-form reply of its task type (read from the prompt), recording the schemas."
    name = "by-task"
    def __init__(self): self.schemas, self.prompts = [], []
    def generate(self, prompts, sampling=None, json_schema=None, reply_prefix=""):
        "One reply per prompt."
        self.prompts += prompts; self.schemas += list(json_schema or [])
        def kind(p):
            text = p[-1]["content"]
            return "mc" if '"Options"' in text else "reasoning" if "step-by-step" in text else "open"
        return [paper_reply(kind(p)) for p in prompts]

def test_paper_stage2_end_to_end_writes_full_length_llava(tmp_path):
    caps = [{"id": f"cap-{i}", "caption": CAPTION} for i in range(47)]
    be = ByTaskBackend()
    cfg = paper(I.PRESETS, shard_size=16, n_compare=0)
    st_ = I.run_instructions(caps, be, cfg, tmp_path, progress=False)
    assert st_["valid"] == 47 and st_["qa_pairs"] == 47 * 7
    assert {t: v["captions"] for t, v in st_["by_type"].items()} == {"mc": 17, "open": 20, "reasoning": 10}
    assert all(s["type"] == "object" and "QA Pairs" in s["properties"] for s in be.schemas)   # the paper's reply form
    llava = json.loads((tmp_path / "instructions" / "llava.json").read_text())
    reasoning = next(r for r in llava if r["task_type"] == "reasoning")
    assert len(reasoning["conversations"][1]["value"]) == 480 and len(reasoning["conversations"]) == 14

def test_stage2_mini_prompts_unchanged():
    cfg = mini(I.PRESETS)
    assert cfg.prompt_style == "mini" and (cfg.min_pairs, cfg.max_pairs, cfg.max_new_tokens) == (6, 6, 480)
    assert (cfg.mc_frac, cfg.open_frac, cfg.reasoning_frac) == (1.0, 1.0, 1.0)
    cap = "A red circle sits in the middle of a white square canvas."
    head = "You create training questions for an image described by a caption. "
    tail = " Answer in JSON only: a list of objects."
    rules = {"mc": "Write 6 multiple-choice questions about the caption. Each has four options A, B, C, D; exactly one is "
                   "correct according to the caption, and 'answer' is its letter.",
             "open": "Write 6 short questions about things stated in the caption, each with a short answer taken from the caption.",
             "reasoning": "Write 6 questions that need reasoning about the scene in the caption (why, what if, what is likely), "
                          "each with an answer that explains the reasoning using facts from the caption."}
    # sha256 of the whole chat and of the 6-pair schema, as before issue 14
    before = {"mc": ("64924f793a932b0153773cf2bb7d2848707e15e12d0481bdc8290ac6d0b53454",
                     "39b157c64f4f13118a350afb854c10d260547ced9c66236f30157ba0790a2cb3"),
              "open": ("9cbdf5569236f9d70ac3cc415ab0e8a3a7b2ddeef72e2d992e83c27408997c9c",
                       "2c2b07af984e898eee10e3c64b1a39ca6c7b3672651d7038be71b5d3863c8d74"),
              "reasoning": ("2f26fb6d3a6b8c0f94e1ed671146a848cdfdcc84e8d4466d54e58d204fd05128",
                            "15dd0257aaab43569db19c40e49b682cb4a3c7bf3a11504b55d654519037a866")}
    for t in I.TASK_TYPES:
        msgs = I.qa_messages(cap, t, cfg.prompt_style)
        assert msgs[0]["content"] == head + rules[t] + tail and msgs == I.qa_messages(cap, t)
        sch = I.qa_schema(t, 6, 6, cfg.prompt_style)
        assert (hashlib.sha256(json.dumps(msgs).encode()).hexdigest(),
                hashlib.sha256(json.dumps(sch, sort_keys=True).encode()).hexdigest()) == before[t]
    assert I.REPLY_PREFIXES["mini"] == I.REPLY_PREFIX == '[{"question": "'

# --- task mix ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,seed", [(470, 0), (10_001, 3), (47_123, 11)])
def test_paper_task_mix_is_171_199_100(n, seed):
    cfg = paper(I.PRESETS)
    mix = {"mc": cfg.mc_frac, "open": cfg.open_frac, "reasoning": cfg.reasoning_frac}
    got = Counter(I.assign_task_types([f"cap-{i}" for i in range(n)], mix, seed).values())
    for t, k in {"mc": 171, "open": 199, "reasoning": 100}.items():
        assert abs(got[t] / n - k / 470) <= 1 / n + 1e-12                       # largest remainder: off by < 1 caption
    assert sum(got.values()) == n

# --- property test: paper-form replies from outside ---------------------------------------------------------------

ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                st.sampled_from(["A", "B", "Z", " ", "\u202e", "<image>", "Why?", "Because the caption says so."]))
item = st.dictionaries(st.sampled_from(["Question", "Options", "Answer", "question", "id"]),
                       st.one_of(ANY, st.dictionaries(st.sampled_from(list("ABCDE")), ANY, max_size=5)), max_size=4)
reply = st.one_of(st.dictionaries(st.sampled_from(["id", "QA Pairs", "qa"]), st.one_of(ANY, st.lists(item, max_size=9)),
                                  max_size=3).map(json.dumps),
                  st.text(max_size=40))

@settings(max_examples=300, deadline=None)
@given(reply, st.sampled_from(I.TASK_TYPES))
def test_paper_parse_never_raises_and_accepts_only_clean_pairs(text, task_type):
    items, why = I.parse_reply(text, task_type, 1, 8, style="paper")
    assert (items is None) != (why is None)
    if items is None: return
    for it in items:
        keys = {"question", "options", "answer"} if task_type == "mc" else {"question", "answer"}
        assert set(it) == keys and isinstance(it["question"], str) and it["question"].strip()
        texts = [it["question"], *(it["options"].values() if task_type == "mc" else [it["answer"]])]
        assert all('"' not in s and "<image>" not in s and unicodedata.category(s[0]) != "Cf" for s in texts)
        if task_type == "mc": assert it["answer"] in "ABCD" and set(it["options"]) == set("ABCD")

# --- SynthVLM ------------------------------------------------------------------------------------------------------

def test_synthvlm_paper_selection_is_clipscore_alone():
    cfg = paper(S.PRESETS)
    assert (cfg.score_clip_weight, cfg.use_ssim) == (2.5, False)             # score = CLIPScore = 2.5 · max(cos, 0)
    assert cfg.text_prefix == "A photo depicts" and cfg.clip_model == "openai/clip-vit-base-patch32"
    assert S.clip_score(1.0) == 2.5 and S.clip_score(-0.3) == 0
    m = mini(S.PRESETS)
    assert (m.score_clip_weight, m.use_ssim, m.lam, m.text_prefix) == (1.0, True, 0.5, "")   # mini selects as before

def _paper_reply(task_type: str, n: int, answer: str = "A") -> str:
    "A paper-form reply of `n` QA pairs (the paper's keys, in the schema's order)."
    item = {"Question": "What colour is it?", "Answer": "red"}
    if task_type == "mc": item = {"Question": "Which?", "Options": {k: k.lower() for k in "ABCD"}, "Answer": answer}
    return json.dumps({"id": "img-1", "QA Pairs": [item] * n})                   # xgrammar: ", " and ": "


def test_paper_schemas_compile_for_constrained_decoding():
    "xgrammar's grammar for the paper's reply form accepts a valid reply and refuses too few pairs or a bad answer."
    import xgrammar as xgr
    from unicorn.fixtures import tiny_llama
    from unicorn.llm import TransformersBackend
    be = TransformersBackend(*tiny_llama())
    for t in I.TASK_TYPES:
        schema = I.qa_schema(t, 6, 8, "paper")
        g = be.grammar(schema)
        good = _paper_reply(t, 6)
        assert not list(I.QAValidator(schema).iter_errors(json.loads(good))), t      # a valid reply, by the schema
        m = xgr.GrammarMatcher(g)
        assert m.accept_string(good) and m.is_completed(), t
        m = xgr.GrammarMatcher(g)
        assert m.accept_string(_paper_reply(t, 5)[:-2]) and not m.accept_string("]"), t    # minItems 6: no close at 5
        assert not xgr.GrammarMatcher(g).accept_string(_paper_reply(t, 6)[:-2] + "x}]}"), t
    mc = be.grammar(I.qa_schema("mc", 6, 8, "paper"))
    assert not xgr.GrammarMatcher(mc).accept_string(_paper_reply("mc", 6, "E"))          # answers are A-D only
