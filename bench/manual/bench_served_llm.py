"""Stage 1 (caption expansion) against a served LLM vs in process: the packaged SmolLM2-135M (issue 27 item 6).

Served: llama-cpp-python's OpenAI-compatible server (its own venv; it reads the packaged GGUF directly), e.g.
  python -m venv /work/llamavenv && /work/llamavenv/bin/pip install 'llama-cpp-python[server]'
  /work/llamavenv/bin/python -m llama_cpp.server --model "$(python -c 'from unicorn.packaged import smollm2_path;
      print(smollm2_path())')" --port 8765 --n_threads 1 --n_ctx 2048 --model_alias smollm2
  python bench/manual/bench_served_llm.py --base-url http://127.0.0.1:8765/v1 --seeds 8
In process: `TransformersBackend` over the same GGUF dequantised to float32 (`unicorn.packaged.load_smollm2`).
Tokens/s = reply tokens (SmolLM2's tokenizer) / wall seconds of `run_captions`'s shard function over the seeds.
"""
import argparse, json, os, tempfile, time

import torch

from unicorn.captions import CaptionsConfig, run_captions
from unicorn.llm import get_backend
from unicorn.packaged import load_smollm2_tokenizer
from unicorn.runs import JsonlShards


def seeds(n: int) -> list[dict]:
    "`n` easy-VQA-like seeds."
    shapes, colours = ["circle", "square", "triangle", "rectangle"], ["red", "blue", "green", "teal", "gray", "brown"]
    return [{"id": f"s{i}", "seed": f"a {colours[i % 6]} {shapes[i % 4]}", "domain": "demo", "label": shapes[i % 4]}
            for i in range(n)]


def timed(backend, cfg, n, tok, engine="local", workers=2) -> dict:
    "Run Stage 1 over `n` seeds; reply tokens, seconds, tokens/s, kept captions."
    root = tempfile.mkdtemp()
    t = time.perf_counter()
    st = run_captions(seeds(n), backend, cfg, root, progress=False, engine=engine, workers=workers)
    dt = time.perf_counter() - t
    raw = list(JsonlShards(os.path.join(root, "captions_raw")))
    ntok = sum(len(tok(r["raw"] or "", add_special_tokens=False).input_ids) for r in raw)
    return {"seconds": round(dt, 2), "reply_tokens": ntok, "tokens_per_s": round(ntok / dt, 1),
            "kept": st["counts"]["kept"], "generated": st["counts"]["generated"]}


def main():
    "Served vs in process, same seeds and sampling settings."
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8765/v1")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = load_smollm2_tokenizer()
    cfg = CaptionsConfig(shard_size=a.seeds, max_new_tokens=96, max_retries=0, batch_size=a.seeds)
    served = timed(get_backend("openai", "smollm2", base_url=a.base_url, concurrency=4, timeout=300), cfg, a.seeds, tok)
    local = timed(get_backend("transformers", "smollm2", batch_size=a.seeds), cfg, a.seeds, tok)
    print(json.dumps({"seeds": a.seeds, "max_new_tokens": 96, "threads": a.threads, "served_llama_cpp": served,
                      "in_process_transformers": local}, indent=1))


if __name__ == "__main__":
    main()
