"Training: the loss of a tiny random-init VLM falls; one condition trains under `accelerate launch` on one CPU process."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
from unicorn.fixtures import tiny_llama
from unicorn.runs import EmbeddingShards, JsonlShards, RunFolder
from unicorn.train import train_stage
from unicorn.vlm import UnicornVLM, set_trainable
from unicorn.vlm_data import EmbeddingIndex, VLMDataset, caption_records

ROOT = Path(__file__).resolve().parents[1]

def _tiny_run(root: Path, n: int = 12) -> RunFolder:
    run = RunFolder(root, profile="mini")
    caps = [{"id": f"c{i}", "seed_id": f"s{i}", "seed": "a red circle", "caption": ["A red circle.", "A blue square."][i % 2],
             "domain": "easyvqa", "source_image": f"train-img{i}"} for i in range(n)]
    JsonlShards(run.path("captions")).write(0, caps)
    EmbeddingShards(run.path("synthetic", "unicorn_code"), dim=8).write(0, ([c["id"] for c in caps], np.random.default_rng(0).standard_normal((n, 8))))
    return run

def test_tiny_model_loss_falls(tmp_path):
    run = _tiny_run(tmp_path / "run")
    lm, tok = tiny_llama()
    v = set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=8, k=2), "full")
    ds = VLMDataset(caption_records(list(JsonlShards(run.path("captions")))), tok, EmbeddingIndex(run.path("synthetic", "unicorn_code")), "plain", k=2)
    log = train_stage(v, ds, steps=25, lr=3e-3, batch_size=4, verbose=False)
    assert np.mean(log["loss"][-5:]) < 0.7 * np.mean(log["loss"][:3]), log["loss"]

def test_accelerate_launch_one_cpu_process(tmp_path):
    _tiny_run(tmp_path / "run")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs/accelerate/cpu.yaml"),
           "-m", "unicorn.train", "--run-dir", str(tmp_path / "run"), "--method", "unicorn_code",
           "--set", "lm=tiny", "lm_dtype=float32", "pretrain_steps=2", "sft_steps=2", "batch_size=2", "lm_mode=full", "max_len=256"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    assert out["processes"] == 1
    tc = json.loads((Path(out["checkpoint"]) / "train_config.json").read_text())
    assert tc["log"]["sft"]["step"] == [1, 2] and (Path(out["checkpoint"]) / "lm").is_dir()

def test_answer_only_loss_through_lora_matches_full_logits(tmp_path):
    "The loss from scored positions only equals transformers' loss on full logits, also through peft's LoRA wrapper."
    import torch
    from unicorn.vlm_data import collate
    run = _tiny_run(tmp_path / "run")
    lm, tok = tiny_llama()
    v = set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=8, k=2), "lora")
    ds = VLMDataset(caption_records(list(JsonlShards(run.path("captions")))), tok, EmbeddingIndex(run.path("synthetic", "unicorn_code")), "plain", k=2)
    b = collate([ds[i] for i in range(4)], tok.pad_token_id)
    out = v(**b)
    ref = v.lm(inputs_embeds=v.embed(b["input_ids"], b["image_emb"]), attention_mask=b["attention_mask"], labels=b["labels"])
    assert torch.allclose(out.loss, ref.loss, atol=1e-5), (out.loss, ref.loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in v.named_parameters() if p.requires_grad and "lora_B" in n)
