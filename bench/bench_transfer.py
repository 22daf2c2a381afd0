"""Stage-3 transfer (mu_T + shifted shards) against the disk's own limit, measured in one run (prints one JSON object).

N x D float16 embeddings are written as shards (`EmbeddingShards`, fsync'd), then each variant runs in a fresh
subprocess (its own peak RSS), on the same shards, one after the other:

- `floor`: what any implementation of the stage needs at least: plain numpy reads of every shard file twice (the mean,
  then the shift) and one write of the same bytes, fsync'd per shard file.
- `old`: the code before issue 16 (the frozen copy in tests/test_transfer_fast.py): `streaming_mean` + `transfer_shards`.
- `new`: `unicorn.transfer.streaming_mean` + `transfer_shards` (mapped reads, one float32 pass per chunk, checks
  folded in, the fsync of one shard overlapped with the next shard's work).

The order is floor, new, old, new, floor (the first writes to a fresh disk area are slower on this VM: each variant
keeps its faster run, and all runs' seconds are listed). Each reports seconds, GB/s (float16 matrix bytes / seconds,
as issue 16 counts them), its ratio to the floor, and peak RSS; `old` and `new` also a digest of the files they wrote (equal: byte-identical outputs). The shards are read from
the page cache (just written): the floor reads them the same way. Everything is removed at the end.

    .venv/bin/python bench/bench_transfer.py                       # 300k x 1280 (768 MB), 10k-row shards, ~1-2 min
    .venv/bin/python bench/bench_transfer.py --rows 1200000        # the paper's scale (3.07 GB; ~10 GB free disk needed)
"""
from __future__ import annotations
import argparse, hashlib, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]       # bench_encode_transfer's shard maker; the frozen old code


def _digest(root: Path) -> str:
    "sha256 over every shard file of `root`, in name order."
    h = hashlib.sha256()
    for p in sorted(root.glob("part-*.safetensors")):
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24): h.update(chunk)
    return h.hexdigest()


def generate(n: int, dim: int, rows: int, work: Path) -> dict:
    "Write the source store: shard k holds rows [k*rows, (k+1)*rows) of unit vectors around a shared direction."
    from bench_encode_transfer import _shard
    from unicorn.runs import EmbeddingShards
    t0, src = time.time(), EmbeddingShards(work / "src", dim=dim)
    for k in range((n + rows - 1) // rows):
        src.write(k, ([f"c{k * rows + i}" for i in range(min(rows, n - k * rows))], _shard(k, rows, n, dim)))
    return {"generate_s": round(time.time() - t0, 2)}


def floor(work: Path) -> dict:
    "Two plain reads of every shard file, and one write of its bytes with an fsync per file."
    out = work / "floor"; out.mkdir()
    paths = sorted((work / "src").glob("part-*.safetensors"))
    t0 = time.time()
    for p in paths: np.fromfile(p, np.uint8)                             # the mean's pass
    for p in paths:                                                       # the shift's pass
        data = np.fromfile(p, np.uint8)
        with open(out / p.name, "wb") as f: f.write(data.data); f.flush(); os.fsync(f.fileno())
    return {"seconds": time.time() - t0}


def transfer(work: Path, impl: str, method: str) -> dict:
    "`streaming_mean` then `transfer_shards` of the old or the new implementation; seconds per phase and the output digest."
    if impl == "old": import test_transfer_fast as m
    else: import unicorn.transfer as m
    from unicorn.runs import EmbeddingShards, peak_rss_mb
    rss0, src, dst = peak_rss_mb(), EmbeddingShards(work / "src"), EmbeddingShards(work / impl)
    t0 = time.time(); mu = m.streaming_mean(src); t1 = time.time()
    c = m.transfer_shards(src, dst, method, mu_t=mu, progress=False); t2 = time.time()
    return {"seconds": t2 - t0, "mean_s": round(t1 - t0, 3), "transfer_s": round(t2 - t1, 3), "rows": c["rows"],
            "rss_after_imports_mb": round(rss0, 1), "files_sha256": _digest(dst.root)}


def variant(name: str, a, work: Path) -> dict:
    "Run one variant in this process; its result with peak RSS."
    from unicorn.runs import peak_rss_mb
    if name == "generate": res = generate(a.rows, a.dim, a.shard_rows, work)
    elif name == "floor": res = floor(work)
    else: res = transfer(work, name, a.method)
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return res


def _sub(name: str, a, work: Path) -> dict:
    "One variant in a fresh subprocess (nice'd like the caller); what it wrote besides the source is removed."
    cmd = [sys.executable, __file__, "--variant", name, "--workdir", str(work), "--rows", str(a.rows), "--dim", str(a.dim),
           "--shard-rows", str(a.shard_rows), "--method", a.method]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode: raise RuntimeError(f"variant {name} failed:\n{out.stderr[-3000:]}")
    for d in ("floor", "old", "new"): shutil.rmtree(work / d, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000, help="embeddings (paper: 1200000)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--shard-rows", type=int, default=10_000)
    ap.add_argument("--method", default="unicorn_paper")
    ap.add_argument("--skip-old", action="store_true", help="leave out the old implementation (slow at the paper's scale)")
    ap.add_argument("--tmp", default=None, help="folder for the shards (default: the system's temp folder)")
    ap.add_argument("--variant", help=argparse.SUPPRESS); ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant: print(json.dumps(variant(a.variant, a, Path(a.workdir)))); return
    gb = a.rows * a.dim * 2 / 1e9
    res = {"rows": a.rows, "dim": a.dim, "shard_rows": a.shard_rows, "method": a.method, "matrix_fp16_gb": round(gb, 3),
           "cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="bench_transfer_", dir=a.tmp))
    try:
        res["generate"] = _sub("generate", a, work)
        order = ["floor", "new"] + ([] if a.skip_old else ["old"]) + ["new", "floor"]   # floor and new twice, around old
        runs = [(v, _sub(v, a, work)) for v in order]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor_s = min(r["seconds"] for v, r in runs if v == "floor")
    for v in dict.fromkeys(order):                                      # each variant: its faster run, all runs' seconds
        mine = [r for w, r in runs if w == v]; best = min(mine, key=lambda r: r["seconds"])
        best.update(seconds_each=[round(r["seconds"], 3) for r in mine], seconds=round(best["seconds"], 3),
                    gb_per_s=round(gb / best["seconds"], 3), time_over_floor=round(best["seconds"] / floor_s, 2),
                    peak_rss_mb=max(r["peak_rss_mb"] for r in mine))
        res[v] = best
    if "old" in res:
        res["new_speedup_over_old"] = round(res["old"]["seconds"] / res["new"]["seconds"], 2)
        res["identical_files"] = res["old"]["files_sha256"] == res["new"]["files_sha256"]
    res["target"] = {"time_over_floor_max": 2.0, "peak_rss_mb_max": 256,
                     "met": res["new"]["time_over_floor"] <= 2.0 and res["new"]["peak_rss_mb"] <= 256}
    res["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
