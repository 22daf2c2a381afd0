"""Stage 2 generation, before vs after, in one run: the plain `model.generate` path (`TransformersBackend(fast=False)`)
and the fast path (`fast=True`: KV cache appended in place, JSON replies stop where their JSON closes), on the same
captions, prompts and model (the packaged SmolLM2-135M, greedy). Reports seconds, new tokens, tokens/s, seconds per
caption, whether the outputs are identical, and where the time goes (prefill, decode steps, xgrammar masking).

    taskset -c 1 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/bench_stage2.py
    # the mini profile's Stage 2 batch: --n 16 --pairs 6 --max-new-tokens 480 --unconstrained 0

Prints one JSON object."""
import argparse, json, os, platform, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from collections import Counter
import torch
import xgrammar.contrib.hf as xhf

from unicorn.packaged import load_smollm2
from unicorn.llm import TransformersBackend, Sampling
from unicorn.instructions import TASK_TYPES, REPLY_PREFIX, qa_messages, qa_schema, parse_reply

CAPTIONS = [
    "A red circle sits in the middle of a white square canvas. Its edge is smooth and its fill is a flat, even red. "
    "A thin grey shadow falls below it. The background is plain white.",
    "A blue triangle points upward on a light grey background. Its three sides are straight and equal, and the fill is "
    "a flat medium blue with no texture. The triangle sits slightly left of the centre.",
    "A teal rectangle lies horizontally across the middle of a white picture. It is about twice as wide as it is tall, "
    "with sharp corners and a flat teal colour. Nothing else is in the frame.",
    "A small yellow circle is drawn near the top right corner of a white canvas. The circle is filled with a bright, "
    "even yellow and has a crisp edge. The rest of the picture is empty.",
    "A large brown triangle fills most of a plain white picture. Its base runs along the bottom edge and its tip "
    "touches the top. The brown is dark and matte, with no pattern.",
    "A black rectangle stands upright in the left half of a white canvas. It is narrow and tall, with straight edges "
    "and square corners, and its fill is a deep, flat black.",
]

T = Counter()
def _timed(f, key):
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); T[key] += time.perf_counter() - t; T[key + "_n"] += 1; return r
    return g

def run(be, prompts, s, schemas=None, prefix=""):
    "(replies, seconds, new tokens, time breakdown) of one `generate` call."
    T.clear(); n0 = be.stats["new_tokens"]; t0 = time.perf_counter()
    out = be.generate(prompts, s, json_schema=schemas, reply_prefix=prefix)
    dt = time.perf_counter() - t0
    parts = {"prefill_s": round(T["prefill"], 2), "decode_s": round(T["decode"], 2), "decode_steps": T["decode_n"],
             "ms_per_decode_step": round(1000 * T["decode"] / max(1, T["decode_n"]), 1),
             "grammar_mask_s": round(T["mask"], 2), "other_s": round(dt - T["prefill"] - T["decode"] - T["mask"], 2)}
    return out, dt, be.stats["new_tokens"] - n0, parts

def row(dt, ntok, n, parts):
    return {"seconds": round(dt, 2), "new_tokens": ntok, "tokens_per_s": round(ntok / dt, 2),
            "seconds_per_caption": round(dt / n, 2), "time": parts}

def compare(bes, repeats, *args):
    "Outputs and result rows of both paths, run `repeats` times in ABBA order (the median time is reported)."
    runs = {name: [] for name in bes}
    for k in range(repeats):
        for name in (list(bes) if k % 2 == 0 else list(bes)[::-1]): runs[name].append(run(bes[name], *args))
    out, rows = {}, {}
    for name, rs in runs.items():
        med = sorted(rs, key=lambda r: r[1])[len(rs) // 2]
        out[name] = rs[0][0]
        rows[name] = row(med[1], med[2], len(args[0]), med[3])
        if repeats > 1: rows[name]["all_seconds"] = [round(r[1], 2) for r in rs]
        assert all(r[0] == rs[0][0] for r in rs), "greedy outputs changed between repeats"
    return out, rows

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6, help="captions for the constrained (schema) run")
    ap.add_argument("--pairs", type=int, default=2, help="QA pairs asked per caption (smoke 2, mini 6)")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--unconstrained", type=int, default=3, help="captions for the unconstrained + reply-prefix run (0 = skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as set by OMP_NUM_THREADS)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each path, alternating (ABBA); median time reported")
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    model, tok = load_smollm2()
    model.forward = _fwd(model.forward)
    xhf.LogitsProcessor.__call__ = _timed(xhf.LogitsProcessor.__call__, "mask")
    caps = [(CAPTIONS[i % len(CAPTIONS)], TASK_TYPES[i % 3]) for i in range(max(a.n, a.unconstrained))]
    prompts = [qa_messages(c, t) for c, t in caps]
    schemas = [qa_schema(t, a.pairs, a.pairs) for _, t in caps]
    s = Sampling(max_new_tokens=a.max_new_tokens)                     # greedy: both paths must write the same text
    bes = {"before": TransformersBackend(model, tok, a.batch_size, fast=False),
           "after": TransformersBackend(model, tok, a.batch_size, fast=True)}
    t0 = time.perf_counter()
    for be in bes.values(): be.generate(prompts[:1], Sampling(max_new_tokens=1), json_schema=schemas[:1])   # warm-up
    for t in TASK_TYPES: [be.grammar(qa_schema(t, a.pairs, a.pairs)) for be in bes.values()]           # compile once
    warm = time.perf_counter() - t0
    res = {"model": "SmolLM2-135M-Instruct (packaged GGUF, float32)", "device": "cpu", "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "captions": a.n, "pairs": a.pairs,
           "max_new_tokens": a.max_new_tokens, "batch_size": a.batch_size, "warmup_and_grammar_compile_s": round(warm, 2)}
    out, res["constrained"] = compare(bes, a.repeats, prompts[:a.n], s, schemas[:a.n])   # constrained: the Stage 2 default
    c = res["constrained"]
    c["identical_outputs"] = f"{sum(x == y for x, y in zip(out['before'], out['after']))}/{a.n}"
    c["speedup"] = round(c["before"]["seconds"] / c["after"]["seconds"], 2)
    if a.unconstrained:                                               # unconstrained, reply started as JSON
        k = a.unconstrained
        out, res["unconstrained_reply_prefix"] = compare(bes, a.repeats, prompts[:k], s, None, REPLY_PREFIX)
        u = res["unconstrained_reply_prefix"]
        same_parse = sum(parse_reply(x, t, a.pairs, a.pairs) == parse_reply(y, t, a.pairs, a.pairs)
                         for x, y, (_, t) in zip(out["before"], out["after"], caps))
        u["identical_outputs"] = f"{sum(x == y for x, y in zip(out['before'], out['after']))}/{k}"
        u["after_is_prefix_of_before"] = f"{sum(y == x[:len(y)] for x, y in zip(out['before'], out['after']))}/{k}"
        u["identical_parse_results"] = f"{same_parse}/{k}"
        u["speedup"] = round(u["before"]["seconds"] / u["after"]["seconds"], 2)
    print(json.dumps(res, indent=1))

def _fwd(f):
    def g(*a, **k):
        ids = k.get("input_ids"); t = time.perf_counter(); r = f(*a, **k)
        T["prefill" if ids is not None and ids.shape[1] > 1 else "decode"] += time.perf_counter() - t
        T["prefill_n" if ids is not None and ids.shape[1] > 1 else "decode_n"] += 1
        return r
    return g

if __name__ == "__main__":
    main()
