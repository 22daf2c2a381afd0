"Each LLM backend's request/response path: transformers (tiny model), vLLM (request building + a stand-in module), OpenAI HTTP (local server)."
import json, sys, time, types
import pytest
from hypothesis import given, settings, strategies as st
from unicorn.fixtures import tiny_llama
from unicorn.llm import (Sampling, TransformersBackend, VLLMBackend, OpenAIBackend, LLMRequestError, serve_openai,
                         vllm_request, openai_chat_body, get_backend, BadReply, completion_text, parse_completion)

SCHEMA = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}, "n": {"enum": [1, 2, 3]}},
          "required": ["colour", "n"], "additionalProperties": False}
PROMPTS = ["describe a red circle", "hi", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a blue square"}]]

@pytest.fixture(scope="module")
def tiny():
    lm, tok = tiny_llama()
    return TransformersBackend(lm, tok, batch_size=2)

def test_transformers_batched_equals_single(tiny):
    s = Sampling(max_new_tokens=8)
    assert tiny.generate(PROMPTS, s) == [tiny.generate([p], s)[0] for p in PROMPTS]
    assert tiny.tok.padding_side == "left"

def test_transformers_schema_constrained(tiny):
    out = tiny.generate(PROMPTS, Sampling(max_new_tokens=60, temperature=1.0, seed=3), json_schema=SCHEMA)
    for o in out:
        d = json.loads(o)
        assert d["colour"] in ("red", "blue") and d["n"] in (1, 2, 3)

def test_transformers_reply_prefix(tiny):
    out = tiny.generate(["x"], Sampling(max_new_tokens=3), reply_prefix='[{"q": "')
    assert out[0].startswith('[{"q": "')

def test_vllm_request_building():
    req = vllm_request(PROMPTS, Sampling(max_new_tokens=99, temperature=0.5, top_p=0.8, seed=7), SCHEMA)
    assert req["messages"][0] == [{"role": "user", "content": "describe a red circle"}]
    assert req["messages"][2][0]["role"] == "system"
    assert req["sampling"] == {"max_tokens": 99, "temperature": 0.5, "top_p": 0.8, "repetition_penalty": 1.0, "seed": 7}
    assert req["structured_outputs"] == {"json": SCHEMA}
    assert req["chat"] == {"add_generation_prompt": True, "continue_final_message": False}
    assert vllm_request(["a"], None, None)["structured_outputs"] is None

def test_vllm_backend_with_stand_in_module(monkeypatch):
    "The real VLLMBackend code path against a stand-in `vllm` module that records what it is given."
    seen = {}
    class SP:
        def __init__(self, **kw): seen["sampling"] = kw
    class SOP:
        def __init__(self, **kw): self.kw = kw
    class LLM:
        def __init__(self, **kw): seen["engine"] = kw
        def chat(self, messages, params, use_tqdm=False, **kw):
            seen["chat"] = (messages, kw)
            out = types.SimpleNamespace(outputs=[types.SimpleNamespace(text='"red"}')])
            return [out for _ in messages]
    vllm = types.ModuleType("vllm"); vllm.LLM, vllm.SamplingParams = LLM, SP
    sp_mod = types.ModuleType("vllm.sampling_params"); sp_mod.StructuredOutputsParams = SOP
    monkeypatch.setitem(sys.modules, "vllm", vllm); monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp_mod)
    be = get_backend("vllm", "Qwen/Qwen2.5-72B-Instruct", tensor_parallel_size=4)
    out = be.generate(["a", "b"], Sampling(max_new_tokens=5), json_schema=SCHEMA, reply_prefix='{"colour": ')
    assert out == ['{"colour": "red"}'] * 2
    assert seen["engine"]["tensor_parallel_size"] == 4 and seen["engine"]["model"] == "Qwen/Qwen2.5-72B-Instruct"
    assert seen["sampling"]["max_tokens"] == 5 and seen["sampling"]["structured_outputs"].kw == {"json": SCHEMA}
    assert seen["chat"][1] == {"add_generation_prompt": False, "continue_final_message": True}
    assert seen["chat"][0][0][-1] == {"role": "assistant", "content": '{"colour": '}

def test_vllm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="needs vLLM"):
        VLLMBackend("m").generate(["a"])

def test_openai_body():
    b = openai_chat_body("m", "hi", Sampling(max_new_tokens=4), SCHEMA, reply_prefix="{")
    assert b["response_format"] == {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True}}
    assert b["messages"][-1] == {"role": "assistant", "content": "{"} and b["continue_final_message"] is True

def test_openai_against_local_server(tiny):
    s = Sampling(max_new_tokens=6)
    with serve_openai(tiny, max_requests=20, fail_first=2) as srv:
        client = OpenAIBackend("tiny", srv.base_url, concurrency=3, timeout=30, max_retries=3, backoff=0.01)
        assert client.generate(PROMPTS, s) == tiny.generate(PROMPTS, s)   # same tokens through HTTP, in order
        assert client.stats["retries"] == 2                                # two 503s, retried
        js = client.generate(["x", "y"], Sampling(max_new_tokens=60), json_schema=SCHEMA)
        assert all(json.loads(j)["colour"] in ("red", "blue") for j in js)
        pre = client.generate(["x"], Sampling(max_new_tokens=3), reply_prefix="[")
        assert pre[0].startswith("[")
        n = srv.n_requests
    assert n <= 20

def test_openai_bounded_retries_then_error(tiny):
    with serve_openai(tiny, max_requests=50, fail_first=50) as srv:       # always 503
        client = OpenAIBackend("tiny", srv.base_url, concurrency=1, timeout=10, max_retries=2, backoff=0.01)
        with pytest.raises(LLMRequestError, match="prompt 0: failed after 3 attempts"):
            client.generate(["x"], Sampling(max_new_tokens=2))
        assert srv.n_requests == 3

def test_openai_timeout_is_retried_then_fails(tiny):
    with serve_openai(tiny, max_requests=10, delay=1.0) as srv:
        client = OpenAIBackend("tiny", srv.base_url, concurrency=1, timeout=0.2, max_retries=1, backoff=0.01)
        with pytest.raises(LLMRequestError, match="no complete reply within 0.2 s"):
            client.generate(["x"], Sampling(max_new_tokens=2))
        assert client.stats["retries"] == 1

@pytest.mark.parametrize("mode,why", [("bad-body", "not JSON"), ("empty-choices", "no choices"),
                                      ("error-object", "model overloaded")])
def test_openai_bad_200_replies_are_retried(tiny, mode, why):
    "An HTTP 200 whose body is not a chat completion is retried like a 503, not raised as a bare JSON/Index/KeyError."
    s = Sampling(max_new_tokens=4)
    with serve_openai(tiny, fail_first=2, fail_mode=mode) as srv:
        client = OpenAIBackend("tiny", srv.base_url, concurrency=1, max_retries=2, backoff=0.01)
        assert client.generate(["x"], s) == tiny.generate(["x"], s) and client.stats["retries"] == 2

@pytest.mark.parametrize("mode,why", [("bad-body", "not JSON"), ("empty-choices", "no choices"),
                                      ("error-object", "model overloaded")])
def test_openai_bad_200_replies_name_the_prompt_and_keep_the_rest(tiny, mode, why):
    s = Sampling(max_new_tokens=4)
    with serve_openai(tiny, fail_first=2, fail_mode=mode) as srv:       # prompts 0 and 1 get the bad reply
        client = OpenAIBackend("tiny", srv.base_url, concurrency=1, max_retries=0, backoff=0.01)
        with pytest.raises(LLMRequestError, match=f"2 of 3 prompts failed; prompt 0: failed after 1 attempts .*{why}") as e:
            client.generate(["a", "b", "c"], s)
    assert sorted(e.value.failed) == [0, 1] and all(why in m for m in e.value.failed.values())
    assert e.value.replies == [None, None, tiny.generate(["c"], s)[0]] and client.stats["failed"] == 2

def test_openai_slow_drip_is_cut_at_one_deadline(tiny):
    "A server dripping a valid reply a byte every 50 ms (~5 s in all) is cut off at timeout=0.4 s, then retried."
    s = Sampling(max_new_tokens=4)
    with serve_openai(tiny, fail_first=2, fail_mode="slow-drip", drip=0.05) as srv:
        client = OpenAIBackend("tiny", srv.base_url, concurrency=1, timeout=0.4, max_retries=0, backoff=0.01)
        t0 = time.monotonic()
        with pytest.raises(LLMRequestError, match="prompt 0: failed after 1 attempts .no complete reply within 0.4 s"):
            client.generate(["x"], s)
        assert time.monotonic() - t0 < 1.5
        client.max_retries = 1; t0 = time.monotonic()                   # drip once more, then a proper reply
        assert client.generate(["x"], s) == tiny.generate(["x"], s) and time.monotonic() - t0 < 2.5

def test_server_fail_modes_are_checked(tiny):
    with pytest.raises(ValueError, match="fail_mode must be one of"):
        serve_openai(tiny, fail_mode="teapot")

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                     max_leaves=8)
_BODY = st.one_of(_JSON,
                  st.builds(lambda c: {"choices": c}, _JSON),
                  st.builds(lambda m: {"choices": [{"message": m}]}, _JSON),
                  st.builds(lambda c: {"choices": [{"message": {"content": c}}]}, _JSON),
                  st.builds(lambda e: {"error": e}, _JSON))

@settings(max_examples=600, deadline=None)
@given(_BODY)
def test_completion_text_property_any_json_is_text_or_bad_reply(data):
    "Any JSON body: the reply text, or `BadReply` (a counted, retried failure) — never a bare KeyError/IndexError/TypeError."
    try: out = completion_text(data)
    except BadReply: return
    assert isinstance(out, str) and out == (data["choices"][0]["message"].get("content") or "")

@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.text(st.sampled_from(list('{}[]":,0 1\\uae')), max_size=40).map(str.encode)))
def test_parse_completion_property_any_bytes_is_text_or_bad_reply(body):
    try: assert isinstance(parse_completion(body), str)
    except BadReply: pass

def test_server_request_budget(tiny):
    with serve_openai(tiny, max_requests=1) as srv:
        client = OpenAIBackend("tiny", srv.base_url, max_retries=0, backoff=0.01)
        client.generate(["x"], Sampling(max_new_tokens=2))
        with pytest.raises(LLMRequestError, match="HTTP 429"):
            client.generate(["x"], Sampling(max_new_tokens=2))

def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown LLM backend"):
        get_backend("nope")

# --- the fast path (issue 11): same text as plain model.generate; JSON replies stop where their JSON closes ---
import torch
from unicorn.llm import json_end, JsonScanner, growing_cache, json_stop

@pytest.mark.parametrize("text,end", [
    ('[1, 2] tail', 6), ('x {"a": "}]"} y', 13), ('["a\\"]", "b"]', 13), ('[[], {}]', 8), ("[1, [2", None), ("", None),
    ("] [1]", 5), ('{"q": "\\\\"}', 11)])
def test_json_end(text, end):
    assert json_end(text) == end
    if end is not None:                                                 # the span is exactly one JSON value
        start = min(i for i in (text.find("["), text.find("{")) if i >= 0)
        json.loads(text[start:end])

def test_json_scanner_fed_in_pieces_equals_whole():
    text = '[{"question": "a \\"b\\" [c]", "answer": "{d}"}, {"question": "e", "answer": "f"}] rest'
    for cut in range(1, len(text)):
        sc = JsonScanner(); sc.feed(text[:cut]); sc.feed(text[cut:])
        assert sc.closed and sc.n == json_end(text)

def test_growing_cache_matches_concatenation():
    c = growing_cache(3)
    ref = []
    for step, m in enumerate([4, 1, 1, 2, 1]):
        k = torch.randn(2, 3, m, 5)
        ref.append(k)
        kk, vv = c.update(k, -k, 0)
        assert torch.equal(kk, torch.cat(ref, dim=-2)) and torch.equal(vv, -torch.cat(ref, dim=-2))
    c.batch_select_indices(torch.tensor([1]))                            # a beam/batch operation, then growth goes on
    k = torch.randn(1, 3, 1, 5); kk, _ = c.update(k, k, 0)
    assert torch.equal(kk, torch.cat([torch.cat(ref, dim=-2)[1:], k], dim=-2))

def test_fast_path_same_text_as_plain_generate(tiny):
    plain = TransformersBackend(tiny.model, tiny.tok, batch_size=2, fast=False)
    assert tiny.fast is True
    for s, js in [(Sampling(max_new_tokens=8), None), (Sampling(max_new_tokens=60), SCHEMA),
                  (Sampling(max_new_tokens=8, temperature=1.0, seed=5), None)]:
        assert tiny.generate(PROMPTS, s, json_schema=js) == plain.generate(PROMPTS, s, json_schema=js)

def test_json_reply_stops_at_its_end(tiny):
    "A scripted model that closes its JSON after 3 tokens and would then ramble: the fast path stops the row there."
    tok = tiny.tok
    closing = tok.encode('a"}]', add_special_tokens=False) + tok.encode(" and then more words", add_special_tokens=False)
    from transformers import LogitsProcessor
    class Force(LogitsProcessor):
        def __call__(self, ids, scores):
            j = min(ids.shape[1] - n_prompt, len(closing) - 1)
            out = torch.full_like(scores, -1e9); out[:, closing[j]] = 0; return out
    enc = tok([tiny.render("x", '[{"q": "')], return_tensors="pt", add_special_tokens=False)
    n_prompt = enc["input_ids"].shape[1]
    outs = {}
    for fast in (False, True):
        kw = dict(max_new_tokens=len(closing) + 2, do_sample=False, pad_token_id=tok.pad_token_id, logits_processor=[Force()])
        if fast: kw["stopping_criteria"] = [json_stop(tok, '[{"q": "', 1)]
        with torch.no_grad(): out = tiny.model.generate(**enc, **kw)
        outs[fast] = tok.decode(out[0, n_prompt:], skip_special_tokens=True)
    assert outs[False].startswith('a"}] and then') and outs[True] == 'a"}]'
