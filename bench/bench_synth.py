"""Time per sample: pixel generation + image encoding (SynthVLM route) vs direct image-embedding generation (Synth²).

Prints one JSON object. By default the pixel path is the *tiny random-init SDXL pipeline* from `unicorn.synthvlm`
(UNet/VAE/text encoders of a few thousand parameters) plus the tiny random CLIP image tower, and the embedding path is
the mini profile's Synth² flow-matching MLP (384-d, untrained: sampling cost does not depend on the weights).
The tiny pipeline's timing is NOT SDXL's: a real SDXL UNet is ~2.6 B parameters at 128×128 latents, so its
ratio to the embedding generator is orders of magnitude larger. Pass `--diffusion-model PATH` to time a real
pipeline by local path (`--kind sdxl|sd3|auto`).

    python bench/bench_synth.py                      # CPU, small
    python bench/bench_synth.py --device cuda        # GPU when available
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch


def _sync(device):
    if device.startswith("cuda"): torch.cuda.synchronize()


def bench_pixel(args, captions):
    "Seconds per sample for diffusion generation + image encoding."
    from unicorn.synthvlm import DiffusionBackend, tiny_sdxl_pipeline, load_diffusion, hf_clip_encoder
    from unicorn.fixtures import tiny_clip
    if args.diffusion_model:
        backend = load_diffusion(args.diffusion_model, args.kind, device=args.device,
                                 dtype="float16" if args.device.startswith("cuda") else "float32")
        what = args.diffusion_model
    else:
        backend = DiffusionBackend(tiny_sdxl_pipeline().to(args.device), device=args.device)
        what = "tiny random SDXL pipeline (unicorn.synthvlm.tiny_sdxl_pipeline)"
    clip, tok, proc = tiny_clip(image_size=32)
    clip = clip.to(args.device)
    _, enc_i = hf_clip_encoder(clip, tok, proc, device=args.device)
    ids = [f"c{i}" for i in range(len(captions))]
    def once(caps, cids):
        imgs = backend.generate(caps, cids, n=1, steps=args.steps, guidance=5.0, height=args.res, width=args.res, seed=0)
        emb = enc_i([im[0] for im in imgs]); _sync(args.device); return emb
    once(captions[:1], ids[:1])                              # warm-up
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        once(captions, ids)
    total = time.perf_counter() - t0
    n = args.repeats * len(captions)
    return {"what": what, "resolution": args.res, "steps": args.steps, "samples": n, "s_per_sample": total / n,
            "unet_params": sum(p.numel() for p in backend.pipe.unet.parameters()) if hasattr(backend.pipe, "unet") else None}


def bench_embedding(args, n_captions):
    "Seconds per sample for Synth²: sampling an image embedding from the flow-matching MLP."
    from unicorn.synth2 import FlowPrior, sample_flow_prior
    torch.manual_seed(0)
    model = FlowPrior(args.dim, args.dim, args.hidden, args.layers).eval().to(args.device)
    cond = np.random.default_rng(0).normal(size=(n_captions, args.dim)).astype(np.float32)
    cond /= np.linalg.norm(cond, axis=1, keepdims=True)
    def once(c):
        if args.device == "cpu":
            return sample_flow_prior(model, c, args.sample_steps, 1.0, seed=0)
        with torch.no_grad():                                # same Euler loop, tensors kept on the device
            x = torch.randn((len(c), model.dim), device=args.device); cc = torch.as_tensor(c, device=args.device)
            for i in range(args.sample_steps):
                x = x + model(x, torch.full((len(c),), i / args.sample_steps, device=args.device), cc) / args.sample_steps
            out = torch.nn.functional.normalize(x * model.sd + model.mu, dim=1); _sync(args.device); return out
    once(cond[:1])
    res = {}
    for label, bs in (("batch_1", 1), ("batched", n_captions)):
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for s in range(0, n_captions, bs): once(cond[s:s + bs])
        res[f"s_per_sample_{label}"] = (time.perf_counter() - t0) / (args.repeats * n_captions)
    return {"what": f"Synth² FlowPrior MLP (dim {args.dim}, hidden {args.hidden}, {args.layers} blocks, untrained)",
            "sample_steps": args.sample_steps, "params": sum(p.numel() for p in model.parameters()), **res}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=8, help="captions per repeat")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--res", type=int, default=64, help="pixel resolution of the tiny pipeline")
    ap.add_argument("--steps", type=int, default=20, help="diffusion steps")
    ap.add_argument("--sample-steps", type=int, default=20, help="Euler steps of the embedding generator")
    ap.add_argument("--dim", type=int, default=384); ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--diffusion-model", default="", help="a real diffusers pipeline folder to time instead of the tiny one")
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available(): ap.error("--device cuda but no GPU is visible")
    if a.threads: torch.set_num_threads(a.threads)
    import transformers; transformers.logging.set_verbosity_error()
    captions = [f"a {c} {s} on a plain background" for c in ("red", "green", "blue", "yellow") for s in ("circle", "triangle")]
    captions = (captions * ((a.n // len(captions)) + 1))[:a.n]
    emb = bench_embedding(a, a.n)
    pix = bench_pixel(a, captions)
    out = {"device": a.device, "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None,
           "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
           "pixel_generation_plus_encoding": pix, "embedding_generation": emb,
           "ratio_pixel_over_embedding_batched": pix["s_per_sample"] / emb["s_per_sample_batched"],
           "ratio_pixel_over_embedding_batch_1": pix["s_per_sample"] / emb["s_per_sample_batch_1"],
           "note": ("the pixel path here is a tiny random pipeline: its time is NOT SDXL's (SDXL's UNet has ~2.6e9 "
                    "parameters and runs at 1024x1024); the ratio only shows the structure of the comparison"
                    if not a.diffusion_model else "real pipeline: " + a.diffusion_model)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
