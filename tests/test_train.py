"Training: the loss of a tiny random-init VLM falls; one condition trains under `accelerate launch` on one CPU process."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
from unicorn.fixtures import tiny_llama
from unicorn.runs import EmbeddingShards, JsonlShards, RunFolder
from unicorn.train import StageSchedule, train_stage
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
    log = train_stage(v, ds, StageSchedule(steps=25, lr=3e-3, batch_size=4), verbose=False)
    assert np.mean(log["loss"][-5:]) < 0.7 * np.mean(log["loss"][:3]), log["loss"]

def test_accumulating_run_resumed_from_accelerate_state_equals_uninterrupted(tmp_path):
    "Stopped after 3 of 8 steps (checkpoints every 2, accumulation over 2), resumed by `accelerator.load_state`: the same model."
    run = _tiny_run(tmp_path / "run")
    def fresh():
        lm, tok = tiny_llama()
        v = set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=8, k=2), "full")
        return v, VLMDataset(caption_records(list(JsonlShards(run.path("captions")))), tok, EmbeddingIndex(run.path("synthetic", "unicorn_code")), "plain", k=2)
    sch = StageSchedule(steps=8, lr=3e-3, batch_size=4, grad_accum_steps=2, save_every_steps=2)
    (a, ds), (b, dsb) = fresh(), fresh()
    ref = train_stage(a, ds, sch, verbose=False)
    train_stage(b, dsb, sch, ckpt_dir=tmp_path / "ck", stop_after=3, verbose=False)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["progress.json", "state-3"]      # older states removed
    assert json.loads((tmp_path / "ck" / "progress.json").read_text())["step"] == 3
    c, dsc = fresh()
    log = train_stage(c, dsc, sch, ckpt_dir=tmp_path / "ck", verbose=False)
    assert log["step"] == list(range(1, 9)) and np.allclose(log["loss"], ref["loss"], atol=1e-5)
    for (n, p), (_, q) in zip(a.named_parameters(), c.named_parameters()): assert np.allclose(p.detach(), q.detach(), atol=1e-5), n

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
