"""Batched vs one-at-a-time generation with the packaged SmolLM2 (transformers backend), same prompts, same run;
plus the valid-reply rate of Stage-2 QA generation with and without schema-constrained decoding.

    .venv/bin/python bench/bench_generation.py [--n 8] [--max-new-tokens 48] [--batch-size 8] [--qa 3] [--threads 0]

Prints one JSON object."""
import argparse, json, os, platform, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch

from unicorn.packaged import load_smollm2
from unicorn.llm import TransformersBackend, Sampling
from unicorn.seeds import easyvqa_seeds
from unicorn.captions import caption_messages
from unicorn.instructions import TASK_TYPES, generate_qa, faithfulness

def timed(be, prompts, s):
    n0 = be.stats["new_tokens"]; t0 = time.perf_counter()
    out = be.generate(prompts, s)
    dt = time.perf_counter() - t0
    return out, dt, be.stats["new_tokens"] - n0

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=8, help="caption prompts")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--qa", type=int, default=3, help="captions for the constrained vs unconstrained QA comparison (0 = skip)")
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    model, tok = load_smollm2()
    seeds, _ = easyvqa_seeds(a.n, seed=1)
    prompts = [caption_messages(r["seed"]) for r in seeds]
    s = Sampling(max_new_tokens=a.max_new_tokens)            # greedy: both variants must produce the same text
    batched_be = TransformersBackend(model, tok, batch_size=a.batch_size)
    single_be = TransformersBackend(model, tok, batch_size=1)
    timed(batched_be, prompts[:1], Sampling(max_new_tokens=2))   # warm-up
    out_b, t_b, tok_b = timed(batched_be, prompts, s)
    out_1, t_1, tok_1 = timed(single_be, prompts, s)
    same = sum(x == y for x, y in zip(out_b, out_1))
    res = {"model": "SmolLM2-135M-Instruct (packaged GGUF, float32)", "device": "cpu", "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "prompts": a.n, "max_new_tokens": a.max_new_tokens,
           "batched": {"batch_size": a.batch_size, "seconds": round(t_b, 2), "new_tokens": tok_b,
                       "tokens_per_s": round(tok_b / t_b, 2), "captions_per_s": round(a.n / t_b, 3)},
           "one_at_a_time": {"seconds": round(t_1, 2), "new_tokens": tok_1,
                             "tokens_per_s": round(tok_1 / t_1, 2), "captions_per_s": round(a.n / t_1, 3)},
           "identical_outputs": f"{same}/{a.n}"}
    res["speedup_tokens_per_s"] = round(res["batched"]["tokens_per_s"] / res["one_at_a_time"]["tokens_per_s"], 2)
    res["speedup_captions_per_s"] = round(res["batched"]["captions_per_s"] / res["one_at_a_time"]["captions_per_s"], 2)
    if a.qa:
        caption = ("A red circle sits in the middle of a white square canvas. Its edge is smooth and its fill is a flat, "
                   "even red. A thin grey shadow falls below it. The background is plain white.")
        caps = [{"id": f"c{i}", "caption": caption, "task_type": TASK_TYPES[i % 3]} for i in range(a.qa)]
        qa = {}
        for name, constrained in (("constrained", True), ("unconstrained_reply_prefix", False)):
            t0 = time.perf_counter()
            r = generate_qa(caps, batched_be, Sampling(max_new_tokens=480, repetition_penalty=1.15), max_retries=0,
                            constrained=constrained, min_items=6, max_items=6)
            qa[name] = {"valid": sum(x["status"] == "ok" for x in r), "of": len(r), "errors": [x["errors"] for x in r],
                        "seconds": round(time.perf_counter() - t0, 1),
                        "supported_frac": {k: round(v["supported_frac"], 3) for k, v in faithfulness(r, {c["id"]: caption for c in caps}).items()}}
        res["qa_valid_reply_rate"] = qa
    print(json.dumps(res, indent=1))

if __name__ == "__main__":
    main()
