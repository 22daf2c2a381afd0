"""VLM benchmark: training throughput and peak memory for k=1 vs k=576 visual tokens (same run, side by side), and
embedding fetch time at 1.2M records, O(1) id index vs the reference code's linear scan, and the answer-only loss
(logits at the scored positions) vs transformers' loss on full logits (alternating, same batch). Prints one JSON object.

    .venv/bin/python bench/bench_vlm.py                       # SmolLM2-135M (bf16, frozen LM), batch 4, 3 steps
    .venv/bin/python bench/bench_vlm.py --lm tiny --steps 5   # the random tiny Llama (seconds)
    python3 bench/bench_vlm.py --lm smollm2-config --batch-size 16 --steps 20   # on a GPU: SmolLM2's architecture
"""
from __future__ import annotations
import argparse, json, os, random, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np


def load_lm(lm_name: str, dtype: str):
    "`(lm, tok)`: the packaged SmolLM2, its architecture with random weights, or a toy Llama."
    import torch
    if lm_name == "smollm2":
        from unicorn.packaged import load_smollm2
        return load_smollm2(dtype)
    if lm_name == "smollm2-config":             # SmolLM2-135M's architecture, random weights: same FLOPs, no GGUF needed
        from transformers import LlamaConfig, LlamaForCausalLM
        from unicorn.fixtures import tiny_tokenizer
        tok = tiny_tokenizer()
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                          tie_word_embeddings=True, pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        return LlamaForCausalLM(cfg).to(getattr(torch, dtype)).eval(), tok
    from unicorn.fixtures import tiny_llama
    return tiny_llama(hidden_size=64, layers=2)


def bench_records(n: int = 64) -> list[dict]:
    "easy-VQA-shaped one-turn records (a question and a one-word answer)."
    from unicorn.vlm_data import vqa_prompt
    return [{"id": f"q{i}", "image": f"q{i}", "conversations": [{"from": "human", "value": vqa_prompt("What shape is in the image?")},
                                                                 {"from": "gpt", "value": "circle"}]} for i in range(n)]


class ConstIndex:
    "A stand-in embedding index: every id has the same random embedding."
    roots, dim = ["bench"], 384
    e = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    def __contains__(self, i): return True
    def __getitem__(self, i): return self.e


def one_variant(lm_name: str, k: int, batch: int, steps: int, dtype: str) -> dict:
    "Train steps of the projector (LM frozen) with `k` visual tokens; samples/s and peak memory of this process."
    import torch
    from unicorn.runs import peak_rss_mb
    from unicorn.vlm import UnicornVLM, set_trainable
    from unicorn.vlm_data import VLMDataset
    from unicorn.train import StageSchedule, train_stage
    rss0 = peak_rss_mb()
    lm, tok = load_lm(lm_name, dtype)
    rss_model = peak_rss_mb()
    recs = bench_records()
    v = set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=384, k=k), "frozen")
    ds = VLMDataset(recs, tok, ConstIndex(), k=k, max_len=2048)
    seq = len(ds[0]["input_ids"])
    train_stage(v, ds, StageSchedule(steps=1, lr=1e-4, batch_size=batch), verbose=False)                # warm-up step, not timed
    t0 = time.time(); train_stage(v, ds, StageSchedule(steps=steps, lr=1e-4, batch_size=batch), verbose=False); dt = time.time() - t0
    cuda = torch.cuda.is_available()
    return {"k": k, "seq_len": seq, "samples_per_s": round(batch * steps / dt, 3), "s_per_step": round(dt / steps, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_model_load_mb": round(rss_model, 1),
            "peak_train_overhead_mb": round(peak_rss_mb() - rss_model, 1), "rss_at_start_mb": round(rss0, 1),
            "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}


def bench_loss_head(lm_name: str, batch: int, reps: int, dtype: str) -> dict:
    "Forward + backward of one batch (k = 1, LM frozen): answer-only logits (`UnicornVLM.forward`) vs full logits, alternating."
    import torch
    from unicorn.vlm import UnicornVLM, set_trainable
    from unicorn.vlm_data import VLMDataset, collate
    lm, tok = load_lm(lm_name, dtype)
    v = set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=384, k=1), "frozen")
    ds = VLMDataset(bench_records(), tok, ConstIndex(), k=1, max_len=2048)
    b = collate([ds[i] for i in range(batch)], tok.pad_token_id)
    def answer_only(): return v(**b).loss
    def full_logits(): return v.lm(inputs_embeds=v.embed(b["input_ids"], b["image_emb"]), attention_mask=b["attention_mask"], labels=b["labels"]).loss
    times, losses = {"answer_only": [], "full_logits": []}, {}
    for r in range(reps + 1):                    # the first round warms up and is not timed
        for name, f in (("answer_only", answer_only), ("full_logits", full_logits)):
            t0 = time.time(); loss = f(); loss.backward(); dt = time.time() - t0
            v.zero_grad(set_to_none=True); losses[name] = float(loss)
            if r: times[name].append(dt)
    med = {n: float(np.median(t)) for n, t in times.items()}
    return {"batch_size": batch, "seq_len": int(b["input_ids"].shape[1]), "reps": reps,
            "s_per_step_answer_only": round(med["answer_only"], 4), "s_per_step_full_logits": round(med["full_logits"], 4),
            "speedup": round(med["full_logits"] / med["answer_only"], 3), "loss_answer_only": losses["answer_only"],
            "loss_full_logits": losses["full_logits"]}


def bench_index(n: int, dim: int, n_fetch: int, n_scan: int, shard: int = 100_000) -> dict:
    "Build an n-record EmbeddingShards store; time O(1) index fetches vs a linear scan over all ids per fetch."
    from unicorn.runs import EmbeddingShards
    from unicorn.vlm_data import EmbeddingIndex
    tmp = Path(tempfile.mkdtemp(prefix="bench_vlm_"))
    st = EmbeddingShards(tmp / "emb", dim=dim); rng = np.random.default_rng(0)
    t0 = time.time()
    for s in range(0, n, shard):
        m = min(shard, n - s)
        st.write(s // shard, ([f"cap{i}" for i in range(s, s + m)], rng.standard_normal((m, dim)).astype(np.float16)))
    write_s = time.time() - t0
    t0 = time.time(); idx = EmbeddingIndex(tmp / "emb"); build_s = time.time() - t0
    q = [f"cap{i}" for i in random.Random(0).sample(range(n), n_fetch)]
    t0 = time.time()
    for i in q: idx[i]
    index_us = (time.time() - t0) / n_fetch * 1e6
    # the reference code: every item walks the list of all (id, embedding) records until it finds its id
    all_ids = [i for s in st for i in s.ids]; all_emb = np.concatenate([m for m in idx.mats])
    def scan(i):
        for r, x in enumerate(all_ids):
            if x == i: return all_emb[r]
        raise KeyError(i)
    t0 = time.time()
    for i in q[:n_scan]: assert np.array_equal(scan(i), idx[i].astype(np.float16))
    scan_us = (time.time() - t0) / n_scan * 1e6
    for p in (tmp / "emb").iterdir(): p.unlink()
    return {"records": n, "dim": dim, "write_store_s": round(write_s, 2), "build_index_s": round(build_s, 2),
            "index_fetch_us": round(index_us, 2), "linear_scan_fetch_us": round(scan_us, 1),
            "speedup": round(scan_us / index_us, 1), "fetches_timed": {"index": n_fetch, "scan": n_scan}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm", default="smollm2", choices=["smollm2", "smollm2-config", "tiny"],
                    help="smollm2: the packaged weights; smollm2-config: its architecture with random weights (for GPUs "
                         "without the package; text is tokenised byte-wise); tiny: a toy Llama")
    ap.add_argument("--dtype", default="bfloat16"); ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3); ap.add_argument("--ks", default="1,576")
    ap.add_argument("--records", type=int, default=1_200_000); ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--fetches", type=int, default=20_000); ap.add_argument("--scans", type=int, default=20)
    ap.add_argument("--loss-reps", type=int, default=5, help="rounds of the answer-only vs full-logits comparison (0 skips it)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:                     # child process: one k, so that peak memory is this variant's alone
        print(json.dumps(one_variant(a.lm, a.one, a.batch_size, a.steps, a.dtype))); return
    import torch
    out = {"lm": a.lm, "dtype": a.dtype, "batch_size": a.batch_size, "steps": a.steps, "lm_frozen": True,
           "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "train": {}}
    for k in [int(x) for x in a.ks.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(k), "--lm", a.lm, "--dtype", a.dtype, "--batch-size", str(a.batch_size), "--steps", str(a.steps)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode: raise RuntimeError(r.stderr[-2000:])
        out["train"][f"k={k}"] = json.loads(r.stdout.strip().splitlines()[-1])
    ks = list(out["train"])
    if len(ks) == 2:
        x, y = out["train"][ks[0]], out["train"][ks[1]]
        out["train"]["throughput_ratio"] = round(x["samples_per_s"] / y["samples_per_s"], 2)
        out["train"]["peak_overhead_ratio"] = round(y["peak_train_overhead_mb"] / max(1.0, x["peak_train_overhead_mb"]), 2)
    if a.loss_reps: out["loss_head"] = bench_loss_head(a.lm, a.batch_size, a.loss_reps, a.dtype)
    out["index"] = bench_index(a.records, a.dim, a.fetches, a.scans)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
