"""Encoder + transfer benchmark (prints one JSON object):

1. encode throughput (items/s), batched vs one-by-one, side by side: all-MiniLM-L6-v2 on captions (minicl's frozen
   text tower) and minicl's CNN image tower on 64x64 images;
2. peak memory (RSS, one subprocess per variant) of computing mu_T with `streaming_mean` and writing shifted shards
   with `transfer_shards`, over N x D float16 embeddings generated on the fly in shards, next to the size of the
   whole matrix. An in-memory variant (the whole matrix at once) runs too when the matrix is small enough.

    .venv/bin/python bench/bench_encode_transfer.py                                  # CI size: 60k x 1280 (~1-2 min)
    .venv/bin/python bench/bench_encode_transfer.py --rows 1200000 --dim 1280        # the paper scale (~3 GB fp16)
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np


def _shard(k: int, rows: int, n: int, dim: int) -> np.ndarray:
    "Shard k of a synthetic caption-embedding matrix (unit rows around a shared direction, as a text cone), float16."
    m = min(rows, n - k * rows)
    rng = np.random.default_rng([7, k])
    x = rng.standard_normal((m, dim), dtype=np.float32); x[:, 0] += 8.0
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def variant(name: str, n: int, dim: int, rows: int, workdir: str) -> dict:
    "Run one memory variant in this process and report its peak RSS."
    from unicorn.runs import EmbeddingShards, peak_rss_mb
    from unicorn.transfer import streaming_mean, transfer_shards, shift_unicorn_paper
    rss0 = peak_rss_mb(); t0 = time.time()
    n_shards = (n + rows - 1) // rows
    if name == "baseline":                     # interpreter + imports only
        return {"variant": name, "peak_rss_mb": round(peak_rss_mb(), 1)}
    src = EmbeddingShards(Path(workdir) / "src", dim=dim)
    if name == "generate":                     # the caption embeddings, produced shard by shard (as an encoder would)
        for k in range(n_shards):
            src.write(k, ([f"c{k * rows + i}" for i in range(min(rows, n - k * rows))], _shard(k, rows, n, dim)))
        return {"variant": name, "peak_rss_mb": round(peak_rss_mb(), 1), "generate_s": round(time.time() - t0, 2)}
    t1 = time.time()
    if name == "streaming":
        mu = streaming_mean(src)
        c = transfer_shards(src, EmbeddingShards(Path(workdir) / "dst"), "unicorn_paper", mu_t=mu, progress=False)
        assert c["rows"] == n
    elif name == "in_memory":                  # what a naive script does: load everything, shift everything
        allm = src.load_all()
        mu = allm.emb.astype(np.float64).mean(0)
        out = shift_unicorn_paper(allm.emb, mu)
        dst = EmbeddingShards(Path(workdir) / "dst")
        for k in range(n_shards): dst.write(k, (allm.ids[k * rows:(k + 1) * rows], out[k * rows:(k + 1) * rows]))
    return {"variant": name, "peak_rss_mb": round(peak_rss_mb(), 1), "rss_at_start_mb": round(rss0, 1),
            "mean_and_shift_s": round(time.time() - t1, 2),
            "rows_per_s": round(n / (time.time() - t1), 1)}


def _sub(name: str, n: int, dim: int, rows: int, tmp: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--variant", name, "--rows", str(n), "--dim", str(dim),
                          "--shard-rows", str(rows), "--workdir", tmp], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

def run_variant(name: str, n: int, dim: int, rows: int) -> dict:
    "Generate the source shards in one subprocess, then run the variant in a fresh one (its own peak RSS); temp folder removed."
    tmp = tempfile.mkdtemp(prefix="bench_transfer_")
    try:
        gen = _sub("generate", n, dim, rows, tmp) if name != "baseline" else None
        res = _sub(name, n, dim, rows, tmp)
        if gen: res["generate_s"] = gen["generate_s"]
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_encode(n_text: int, n_img: int, batch: int) -> dict:
    "Items/s of MiniLM (text) and minicl's image tower (random weights: speed does not depend on them), batched vs one-by-one."
    import torch
    from unicorn.packaged import load_minilm
    from unicorn.encoders import MiniCL, images_to_tensor
    st = load_minilm()
    texts = [f"The image shows a {c} {s} near the {p} of a plain pale background; its edges are crisp and its colour is flat."
             for c, s, p in zip(["red", "blue", "teal", "gray"] * 1000, ["circle", "triangle", "rectangle"] * 2000,
                                ["centre", "top", "left", "right", "bottom"] * 1000)][:n_text]
    st.encode(texts[:8], batch_size=8)                         # warm-up
    t0 = time.time(); st.encode(texts, batch_size=batch, show_progress_bar=False); tb = time.time() - t0
    t0 = time.time()
    for t in texts: st.encode([t], batch_size=1, show_progress_bar=False)
    t1 = time.time() - t0
    model = MiniCL().eval()
    imgs = images_to_tensor(np.random.default_rng(0).integers(0, 255, (n_img, 64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        model.image(imgs[:8])
        t0 = time.time()
        for i in range(0, n_img, batch): model.image(imgs[i:i + batch])
        ib = time.time() - t0; t0 = time.time()
        for i in range(n_img): model.image(imgs[i:i + 1])
        i1 = time.time() - t0
    return {"text_minilm": {"items": n_text, "batch_size": batch, "batched_items_per_s": round(n_text / tb, 1),
                            "one_by_one_items_per_s": round(n_text / t1, 1), "speedup": round(t1 / tb, 2)},
            "image_minicl_cnn": {"items": n_img, "batch_size": batch, "batched_items_per_s": round(n_img / ib, 1),
                                 "one_by_one_items_per_s": round(n_img / i1, 1), "speedup": round(i1 / ib, 2)},
            "torch_threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60_000, help="embeddings in the transfer benchmark (paper: 1200000)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--shard-rows", type=int, default=10_000)
    ap.add_argument("--in-memory-max-gb", type=float, default=1.0, help="run the in-memory variant only below this matrix size")
    ap.add_argument("--n-text", type=int, default=256); ap.add_argument("--n-img", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--variant", help=argparse.SUPPRESS); ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant:
        print(json.dumps(variant(a.variant, a.rows, a.dim, a.shard_rows, a.workdir))); return
    matrix_gb = a.rows * a.dim * 2 / 1e9
    res = {"transfer": {"rows": a.rows, "dim": a.dim, "shard_rows": a.shard_rows, "method": "unicorn_paper",
                        "whole_matrix_fp16_mb": round(a.rows * a.dim * 2 / 2**20, 1),
                        "one_shard_fp16_mb": round(a.shard_rows * a.dim * 2 / 2**20, 1)}}
    variants = ["baseline", "streaming"] + (["in_memory"] if matrix_gb <= a.in_memory_max_gb else [])
    for v in variants: res["transfer"][v] = run_variant(v, a.rows, a.dim, a.shard_rows)
    t = res["transfer"]; base = t["baseline"]["peak_rss_mb"]
    t["streaming_peak_over_baseline_mb"] = round(t["streaming"]["peak_rss_mb"] - base, 1)
    t["streaming_peak_over_baseline_vs_matrix"] = round(t["streaming_peak_over_baseline_mb"] / t["whole_matrix_fp16_mb"], 4)
    if "in_memory" in t:
        t["in_memory_peak_over_baseline_mb"] = round(t["in_memory"]["peak_rss_mb"] - base, 1)
        t["in_memory_over_streaming"] = round(t["in_memory_peak_over_baseline_mb"] / max(t["streaming_peak_over_baseline_mb"], 1e-9), 2)
    else:
        t["in_memory"] = f"skipped: the matrix is {matrix_gb:.2f} GB > --in-memory-max-gb {a.in_memory_max_gb}"
    if not a.skip_encode: res["encode"] = bench_encode(a.n_text, a.n_img, a.batch)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
