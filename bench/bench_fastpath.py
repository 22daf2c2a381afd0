"""The mini VLM's speed levers, each before vs after, measured side by side in one run (prints JSON).

- `train_step`: one projector training step on easy-VQA questions, full sequences (LLaVA order, image first) vs the
  prefix cache (image after the question, the prompt before it computed once; 31a). Same batch size and data.
- `rank_answers`: likelihood ranking of the 13 easy-VQA answers, whole prompt per multi-token answer vs
  `rank_answers_cached` (prefix cache + one small step for the second tokens); also whether the top answers agree.
- `image_token_id`: the old look-up through `tok.get_vocab()` vs the new one.

    .venv/bin/python bench/bench_fastpath.py [--threads 2] [--batch-size 32] [--steps 3] [--questions 64]
"""
import argparse, json, time

import numpy as np
import torch


def best_of(fn, reps: int) -> float:
    "The fastest of `reps` timed calls of `fn` (after one warm-up call)."
    fn(); ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3); ap.add_argument("--questions", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from unicorn.packaged import load_smollm2, load_easyvqa, easyvqa_answers
    from unicorn.vlm import UnicornVLM, set_trainable, image_token_id, IMAGE_TOKEN
    from unicorn.vlm_data import VLMDataset, easyvqa_records, vqa_prompt
    from unicorn.train import _batch, balance_question_types
    from unicorn.prefix_cache import PrefixCache
    from unicorn.evaluate import prompt_ids, rank_answers, rank_answers_cached

    lm, tok = load_smollm2("bfloat16")
    out = {"threads": a.threads, "batch_size": a.batch_size}

    # image_token_id: old (get_vocab) vs new
    image_token_id(tok)
    old = lambda: IMAGE_TOKEN in tok.get_vocab() and tok.convert_tokens_to_ids(IMAGE_TOKEN)
    t_old, t_new = best_of(old, 5), best_of(lambda: image_token_id(tok), 5)
    out["image_token_id"] = {"before_ms": round(1e3 * t_old, 3), "after_ms": round(1e3 * t_new, 4), "speedup": round(t_old / t_new, 1)}

    # a training step: full sequences (image first) vs the prefix cache (image after the question)
    q = load_easyvqa("train").head(4000)
    ids = {f"train-img{i}" for i in q.image_id}
    class Index:                                  # random stand-in embeddings: the step's cost does not depend on them
        dim, roots = 256, ["random"]
        def __contains__(self, i): return True
        def __getitem__(self, i): return np.random.default_rng(abs(hash(i)) % 2**32).standard_normal(256).astype(np.float32)
    res = {}
    for layout, cached in (("before_text", False), ("after_text", True)):
        recs, _ = easyvqa_records(q, {i: [i] for i in ids}, image_position=layout)
        ds = VLMDataset(balance_question_types(recs), tok, Index())
        vlm = set_trainable(UnicornVLM.from_lm(lm, tok, 256, image_position=layout), "frozen")
        cache = PrefixCache(lm) if cached else None
        opt = torch.optim.AdamW(vlm.projector.parameters(), 1e-3)
        rng = np.random.default_rng(0)
        def step():
            items = [ds[int(i)] for i in rng.integers(0, len(ds), a.batch_size)]
            loss = vlm(**_batch(items, tok.pad_token_id, cache, vlm.cfg.image_token_id)).loss
            loss.backward(); opt.step(); opt.zero_grad()
        res[layout] = best_of(step, a.steps)
    out["train_step"] = {"full_sequences_s": round(res["before_text"], 3), "prefix_cache_s": round(res["after_text"], 3),
                         "speedup": round(res["before_text"] / res["after_text"], 2)}

    # likelihood ranking of the 13 answers: rank_answers vs rank_answers_cached, same prompts and embeddings
    te = load_easyvqa("test").head(a.questions)
    emb = np.random.default_rng(1).standard_normal((len(te), 256)).astype(np.float32)
    vlm = UnicornVLM.from_lm(lm, tok, 256, image_position="after_text").eval()
    ps = [prompt_ids(tok, vqa_prompt(x, True, "after_text")) for x in te.question]
    ans = easyvqa_answers()
    cache = PrefixCache(lm, inference_only=True)
    r_old = {}; r_new = {}
    t_old = best_of(lambda: r_old.update(x=rank_answers(vlm, tok, ps, ans, emb, 32)), 1)
    t_new = best_of(lambda: r_new.update(x=rank_answers_cached(vlm, tok, cache, ps, ans, emb, 64)), 1)
    out["rank_answers"] = {"questions": len(ps), "before_s_per_q": round(t_old / len(ps), 4), "after_s_per_q": round(t_new / len(ps), 4),
                           "speedup": round(t_old / t_new, 2),
                           "same_top_answer": float((r_old["x"].argmax(1) == r_new["x"].argmax(1)).mean()),
                           "max_abs_logprob_diff": round(float(np.abs(r_old["x"] - r_new["x"]).max()), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
