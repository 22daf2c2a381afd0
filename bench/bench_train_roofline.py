"""One mini-VLM training step against this machine's FLOP bound, in float32 and bfloat16, in one run (prints JSON).

The step is the mini preset's: the packaged SmolLM2-135M frozen, k = 1, the image token after the question so the
prompt before it comes from the prefix cache (31a), batch 32 of balanced easy-VQA questions, AdamW on the projector.
Its FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on the step itself (forward and backward: the
frozen LM's backward computes input gradients only). The bound is those FLOPs at the machine's peak matmul rate,
measured in the same run per dtype (square products of 1024 and 2048, the best of a few); the step's time over its
bound says how far the step is from the hardware (1.0 = every cycle a full-rate matmul).

Two float32 variants are timed beside it, as ratios (issue 23: fewer FLOPs, since the float32 step is at its bound):
`uncropped`, the step as it was before the model stopped running the tokens after the last one that predicts a
target, and `answer_start`, the image moved after the assistant header (fewer tokens, but it learns worse: 31a).

    .venv/bin/python bench/bench_train_roofline.py [--threads N] [--batch-size 32] [--steps 4] [--dtypes float32 bfloat16]
"""
import argparse, json, sys, time

import numpy as np
import torch


def peak_gflops(dtype, seconds: float = 1.0) -> float:
    "The best GFLOP/s of square matrix products (1024, 2048) in `dtype` on this CPU, each repeated ~`seconds`."
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        k, t0 = 0, time.perf_counter()
        while k < 2 or time.perf_counter() - t0 < seconds / 2:
            a @ b
            k += 1
        best = max(best, 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9)
    return best


def uncropped_loss(vlm, batch: dict) -> torch.Tensor:
    "The loss as the model computed it before it stopped at the last position that predicts a target (every token run)."
    labels = batch["labels"]
    embeds = vlm.embed(batch["input_ids"], batch.get("image_emb"))
    nxt = labels[:, 1:]
    keep = (nxt != -100).any(0).nonzero().squeeze(1)
    kw = {k: v for k, v in batch.items() if k not in ("input_ids", "labels", "image_emb")}
    out = vlm.lm(inputs_embeds=embeds, logits_to_keep=keep, **kw)
    return torch.nn.functional.cross_entropy(out.logits.float().flatten(0, 1), nxt[:, keep].flatten(), ignore_index=-100)


def make_step(dtype: str, batch_size: int, variant: str = "preset"):
    """The mini preset's training step for the packaged SmolLM2 in `dtype` (`variant`: "preset", "uncropped",
    "answer_start"): a function that runs one optimizer step."""
    from unicorn.packaged import load_smollm2, load_easyvqa
    from unicorn.vlm import UnicornVLM, set_trainable
    from unicorn.vlm_data import VLMDataset, easyvqa_records, sft_template
    from unicorn.train import PRESETS, _batch, balance_question_types
    from unicorn.prefix_cache import PrefixCache
    cfg = PRESETS["mini"]
    position = "answer_start" if variant == "answer_start" else cfg.image_position
    lm, tok = load_smollm2(dtype)
    q = load_easyvqa("train").head(4000)
    ids = {f"train-img{i}" for i in q.image_id}
    class Index:                                  # random stand-in embeddings: the step's cost does not depend on them
        dim, roots = 256, ["random"]
        def __contains__(self, i): return True
        def __getitem__(self, i): return np.random.default_rng(abs(hash(i)) % 2**32).standard_normal(256).astype(np.float32)
    recs, _ = easyvqa_records(q, {i: [i] for i in ids}, image_position=position)
    ds = VLMDataset(balance_question_types(recs), tok, Index(), template=sft_template(position))
    vlm = set_trainable(UnicornVLM.from_lm(lm, tok, 256, image_position=position,
                                           input_scale=cfg.input_scale), "frozen")
    cache = PrefixCache(lm)
    opt = torch.optim.AdamW(vlm.projector.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    items = [[ds[int(i)] for i in rng.integers(0, len(ds), batch_size)] for _ in range(3)]
    batches = [_batch(it, tok.pad_token_id, cache, vlm.cfg.image_token_id) for it in items]   # fills the prefix cache
    def step(i: int = 0):
        "One optimizer step, collation included (the model extends the batch's key/value cache: built anew each step)."
        batch = _batch(items[i % len(items)], tok.pad_token_id, cache, vlm.cfg.image_token_id)
        loss = uncropped_loss(vlm, batch) if variant == "uncropped" else vlm(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return step, batches


def measure(dtype: str, batch_size: int, steps: int, variant: str = "preset") -> dict:
    "Step time (best of `steps`), its counted FLOPs and the tokens it processes, for `dtype` and `variant`."
    from torch.utils.flop_counter import FlopCounterMode
    step, batches = make_step(dtype, batch_size, variant)
    step(0)
    with FlopCounterMode(display=False) as fc:
        step(1)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    tokens = int(batches[0]["input_ids"].numel())
    return {"step_s": round(min(times), 4), "step_s_median": round(float(np.median(times)), 4),
            "flops": int(fc.get_total_flops()), "suffix_tokens": tokens}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every usable core)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    a = ap.parse_args()
    from unicorn.machine import machine_info, machine_line, usable_cores
    torch.set_num_threads(a.threads or usable_cores())
    out = {"machine": machine_line(machine_info()), "threads": torch.get_num_threads(), "batch_size": a.batch_size}
    for dt in a.dtypes:
        peak = peak_gflops(getattr(torch, dt))
        m = measure(dt, a.batch_size, a.steps)
        bound = m["flops"] / (peak * 1e9)
        out[dt] = m | {"peak_gflops": round(peak, 1), "flop_bound_s": round(bound, 4),
                       "step_over_bound": round(m["step_s"] / bound, 2),
                       "achieved_gflops": round(m["flops"] / m["step_s"] / 1e9, 1)}
        print(f"{dt}: {json.dumps(out[dt])}", file=sys.stderr, flush=True)
    if "float32" in out:
        for v in ("uncropped", "answer_start"):
            m = measure("float32", a.batch_size, a.steps, v)
            out[f"float32_{v}"] = m | {"step_over_preset": round(m["step_s"] / out["float32"]["step_s"], 2),
                                       "flops_over_preset": round(m["flops"] / out["float32"]["flops"], 2)}
            print(f"float32_{v}: {json.dumps(out[f'float32_{v}'])}", file=sys.stderr, flush=True)
    if "float32" in out and "bfloat16" in out:
        out["bf16_over_fp32_step_time"] = round(out["bfloat16"]["step_s"] / out["float32"]["step_s"], 2)
        out["bf16_over_fp32_peak"] = round(out["bfloat16"]["peak_gflops"] / out["float32"]["peak_gflops"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
