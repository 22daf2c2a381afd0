"""How far transformers generation on CPU is from what the packaged SmolLM2-135M needs (issue 16, part 3).

One run measures this machine's limits and then generation, side by side:
- `peak_gflops`: fp32 matrix-multiply throughput (2048x2048 `torch.mm`, the best of 5);
- `read_gbs`: memory read bandwidth (a 1 GiB `sum`, the best of 5);
- per batch size, greedy `TransformersBackend.generate` of `--new` tokens after the Stage-1 caption prompts, split into
  prefill (the prompt) and decode (per new token), with its roofline bound: prefill FLOPs / peak, plus for each decode
  step the larger of its FLOPs / peak and one read of the weights / bandwidth (a decode step streams every weight
  once, so small batches are bound by memory and only large ones by arithmetic);
- `flop_bound_ratio`: observed time / FLOPs-only time (the "compute bound"), `roofline_ratio`: observed / roofline;
- `identical_text_vs_smallest_batch`: each batch size's greedy text equals the smallest batch's (one at a time if
  `1` is among `--batches`), and `fast_path_identical_to_plain_generate`: the fast path's equals plain `model.generate`'s.

    .venv/bin/python bench/bench_generation_roofline.py [--batches 1 8 16 64] [--new 64] [--prompts 64]

Prints one JSON object."""
import argparse, json, os, platform, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch

from unicorn.packaged import load_smollm2
from unicorn.llm import TransformersBackend, Sampling
from unicorn.seeds import easyvqa_seeds
from unicorn.captions import caption_messages


def best_of(fn, n: int = 5) -> float:
    "The shortest of `n` timed calls of `fn`, in seconds (after one warm-up call)."
    fn(); ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)


def machine_limits() -> dict:
    "fp32 matmul GFLOP/s and memory read GB/s of this machine, measured now."
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x = torch.randn(256 * 1024 * 1024)                       # 1 GiB of float32
    return {"peak_gflops": round(2 * 2048 ** 3 / best_of(lambda: torch.mm(a, b)) / 1e9, 1),
            "read_gbs": round(x.numel() * 4 / best_of(lambda: x.sum()) / 1e9, 2)}


def model_costs(model) -> dict:
    "FLOPs per token of the weights, attention FLOPs per token per context position, and weight bytes read per step."
    c = model.config
    n = sum(p.numel() for p in model.parameters())               # tied embeddings: the table is read once, as lm_head
    return {"params": n, "flops_per_token": 2 * n, "attn_flops_per_ctx": 4 * c.num_hidden_layers * c.hidden_size,
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


def bound_seconds(costs: dict, lim: dict, batch: int, prompt_len: int, new: int) -> dict:
    "FLOPs-only and roofline time of a greedy generation of `new` tokens for `batch` prompts of `prompt_len` tokens."
    peak, bw = lim["peak_gflops"] * 1e9, lim["read_gbs"] * 1e9
    pre = batch * prompt_len * (costs["flops_per_token"] + costs["attn_flops_per_ctx"] * prompt_len / 2) / peak
    steps = [batch * (costs["flops_per_token"] + costs["attn_flops_per_ctx"] * (prompt_len + t)) / peak for t in range(1, new)]
    mem = costs["weight_bytes"] / bw
    return {"flops_s": pre + sum(steps), "roofline_s": pre + sum(max(s, mem) for s in steps)}


def run_batch(model, tok, prompts: list, batch: int, new: int) -> dict:
    "Time greedy generation of `prompts` in batches of `batch`: prefill (1 new token) and the whole reply."
    be = TransformersBackend(model, tok, batch_size=batch)
    t_pre = best_of(lambda: be.generate(prompts[:batch], Sampling(max_new_tokens=1)), n=2)
    n0 = be.stats["new_tokens"]; t0 = time.perf_counter()
    out = be.generate(prompts, Sampling(max_new_tokens=new)); t_all = time.perf_counter() - t0
    n_batches = -(-len(prompts) // batch)
    return {"text": out, "seconds": t_all, "prefill_s_per_batch": t_pre, "new_tokens": be.stats["new_tokens"] - n0,
            "decode_ms_per_step": 1000 * (t_all / n_batches - t_pre) / max(1, new - 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 64])
    ap.add_argument("--new", type=int, default=64, help="new tokens per reply (greedy; replies run to this length)")
    ap.add_argument("--prompts", type=int, default=64, help="Stage-1 caption prompts (a multiple of every batch size)")
    a = ap.parse_args(argv)
    model, tok = load_smollm2()
    lim, costs = machine_limits(), model_costs(model)
    seeds, _ = easyvqa_seeds(a.prompts, seed=1)
    prompts = [caption_messages(r["seed"]) for r in seeds]
    be = TransformersBackend(model, tok)
    prompt_len = max(len(tok(be.render(p), add_special_tokens=False).input_ids) for p in prompts)
    rows, ref = {}, None
    for b in sorted(a.batches):
        r = run_batch(model, tok, prompts if b > 1 else prompts[:8], b, a.new)   # one at a time: 8 prompts are enough
        n = len(r["text"]); ref = ref or r["text"]
        bound = bound_seconds(costs, lim, b, prompt_len, a.new)
        per_batch = r["seconds"] / -(-n // b)
        rows[b] = {"tokens_per_s": round(r["new_tokens"] / r["seconds"], 1), "new_tokens": r["new_tokens"], "prefill_s": round(r["prefill_s_per_batch"], 2),
                   "decode_ms_per_step": round(r["decode_ms_per_step"], 1),
                   "flop_bound_tokens_per_s": round(b * a.new / bound["flops_s"], 1),
                   "roofline_tokens_per_s": round(b * a.new / bound["roofline_s"], 1),
                   "flop_bound_ratio": round(per_batch / bound["flops_s"], 2),
                   "roofline_ratio": round(per_batch / bound["roofline_s"], 2),
                   "identical_text_vs_smallest_batch": f"{sum(x == y for x, y in zip(r['text'], ref))}/{min(n, len(ref))}"}
    plain = TransformersBackend(model, tok, batch_size=8, fast=False).generate(prompts[:8], Sampling(max_new_tokens=a.new))
    fast = TransformersBackend(model, tok, batch_size=8).generate(prompts[:8], Sampling(max_new_tokens=a.new))
    print(json.dumps({"model": "SmolLM2-135M-Instruct (packaged GGUF, float32)", "threads": torch.get_num_threads(),
                      "cpu": platform.processor() or platform.machine(), **lim, **costs, "prompt_len": prompt_len,
                      "new_tokens": a.new, "by_batch": rows,
                      "fast_path_identical_to_plain_generate": f"{sum(x == y for x, y in zip(plain, fast))}/8"}, indent=1))


if __name__ == "__main__":
    main()
