"Encoders: one interface over HF CLIP, OpenCLIP, LLM2CLIP-style and minicl; shards with ids; tiny random models only."
import json
import numpy as np
import pytest
import torch

from unicorn.encoders import (load_encoder, HFDualEncoder, LLM2CLIPEncoder, MiniCL, MiniCLConfig, MiniCLEncoder,
                              encode_to_shards, save_minicl, load_minicl, train_minicl, label_aware_clip_loss,
                              minicl_train_pairs, label_pair_gap, label_retrieval)
from unicorn.gap import gap_vector, shifted_gap
from unicorn.fixtures import tiny_clip, tiny_llama
from unicorn.runs import EmbeddingShards

IMGS = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(5)]


def _unit(x): np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


def l2(x): return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_hf_clip_by_path_batched_equals_one_by_one(tmp_path):
    m, tok, proc = tiny_clip()
    for o in (m, tok, proc): o.save_pretrained(tmp_path)
    enc = load_encoder("hf_clip", path=str(tmp_path))
    texts = ["a red circle", "a much longer caption about a blue square", "x"]
    a = enc.encode_text(texts, batch_size=3, progress=False)
    b = np.concatenate([enc.encode_text([t], progress=False) for t in texts])
    np.testing.assert_allclose(a, b, atol=1e-5); _unit(a)
    v = enc.encode_image(IMGS, batch_size=2, progress=False); assert v.shape == (5, 16); _unit(v)


def test_open_clip_tiny_config(tmp_path):
    import open_clip
    from safetensors.torch import save_file
    (tmp_path / "unicorn-tiny-t.json").write_text(json.dumps({"embed_dim": 8,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 16, "head_width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path)
    save_file(open_clip.create_model("unicorn-tiny-t").state_dict(), str(tmp_path / "w.safetensors"))
    enc = load_encoder("open_clip", model_name="unicorn-tiny-t", pretrained=str(tmp_path / "w.safetensors"))
    assert enc.dim == 8
    _unit(enc.encode_text(["a", "b c"], progress=False)); _unit(enc.encode_image(IMGS[:2], progress=False))


def test_llm2clip_no_77_token_cut_and_padding_invariance():
    lm, tok = tiny_llama(); clip, _, proc = tiny_clip()
    enc = LLM2CLIPEncoder(lm, tok, clip, proc, torch.nn.Linear(lm.config.hidden_size, 16))
    short, long1 = "a dot", "word " * 60
    long2 = long1 + "and a different ending"          # differs only after token 300 > 77
    e = enc.encode_text([long1, long2, short], progress=False)
    assert len(tok(long1)["input_ids"]) > 77
    assert not np.allclose(e[0], e[1], atol=1e-4)      # text past 77 tokens still changes the embedding
    np.testing.assert_allclose(enc.encode_text([short], progress=False)[0], e[2], atol=1e-5)   # padding ignored
    assert enc.encode_image(IMGS[:2], progress=False).shape == (2, 16)


def test_minicl_trains_saves_loads_and_shards(tmp_path):
    model, log = train_minicl(MiniCLConfig(n_steps=12, batch_size=32, max_train_images=96), progress=False)
    assert len(log["loss"]) == 12 and np.isfinite(log["loss"]).all()
    save_minicl(model, tmp_path / "minicl")
    enc = load_encoder("minicl", folder=tmp_path / "minicl")
    np.testing.assert_allclose(enc.encode_image(IMGS, progress=False), MiniCLEncoder(model).encode_image(IMGS, progress=False), atol=1e-6)
    st = EmbeddingShards(tmp_path / "emb")
    c = encode_to_shards(enc, [f"i{k}" for k in range(5)], IMGS, st, kind="image", shard_size=2)
    assert c["shards"] == 3
    sh = st.load_all(); assert sh.ids == [f"i{k}" for k in range(5)] and sh.emb.dtype == np.float16
    # resume: a missing shard is re-encoded, the others are kept
    st.path(1).unlink()
    assert encode_to_shards(enc, [f"i{k}" for k in range(5)], IMGS, st, kind="image", shard_size=2)["written"] == 1
    with pytest.raises(ValueError, match="3 ids for 5 items"):
        encode_to_shards(enc, ["a", "b", "c"], IMGS, EmbeddingShards(tmp_path / "x"), kind="image")


def test_label_aware_loss_is_clip_loss_for_distinct_labels():
    torch.manual_seed(0); v, t = torch.randn(6, 4), torch.randn(6, 4)
    L = torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T * 2.0
    ref = (torch.nn.functional.cross_entropy(L, torch.arange(6)) + torch.nn.functional.cross_entropy(L.T, torch.arange(6))) / 2
    torch.testing.assert_close(label_aware_clip_loss(v, t, torch.arange(6), torch.log(torch.tensor(2.0))), ref)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder"): load_encoder("nope")


@pytest.fixture(scope="module")
def tiny_minicl():
    return train_minicl(MiniCLConfig(n_steps=6, batch_size=32, max_train_images=80), progress=False)


def test_minicl_gap_target_is_stored_and_applied(tiny_minicl, tmp_path):
    model, log = tiny_minicl
    assert abs(log["gap_train"]["shifted"] - 0.82) < 1e-3 and model.cfg.gap_target == 0.82
    img, txt = minicl_train_pairs(model)                                  # native embeddings of the 80 train pairs
    assert abs(np.linalg.norm(gap_vector(img, txt)) - log["gap_train"]["native"]) < 1e-5
    enc = MiniCLEncoder(model)
    d, lam = enc.gap_shift
    assert lam == pytest.approx(log["gap_train"]["lam"], abs=1e-6) and lam != 0
    nat = enc.with_gap(None)
    assert nat.gap_shift[1] == 0.0 and nat.model.cfg.gap_target is None
    # every embedding the encoder returns is Norm(native ∓ λΔ)
    np.testing.assert_allclose(enc.encode_image(IMGS, progress=False),
                               l2(nat.encode_image(IMGS, progress=False) - lam * d), atol=1e-5)
    np.testing.assert_allclose(enc.encode_text(["a red circle"], progress=False),
                               l2(nat.encode_text(["a red circle"], progress=False) + lam * d), atol=1e-5)
    for g in (0.3, 0.5, 1.0):                                              # the knob, re-solved on the train pairs
        e = enc.with_gap(g)
        assert abs(np.linalg.norm(shifted_gap(img, txt, *e.gap_shift)) - g) < 1e-3
    assert enc.gap_shift[1] == lam                                         # copies leave the original alone
    save_minicl(enc.with_gap(0.5).model, tmp_path / "m")
    back = load_minicl(tmp_path / "m")
    assert back.model.cfg.gap_target == 0.5 and abs(np.linalg.norm(shifted_gap(img, txt, *back.gap_shift)) - 0.5) < 1e-3


def test_minicl_old_checkpoint_loads_native(tiny_minicl, tmp_path):
    from safetensors.torch import save_file
    model, _ = tiny_minicl
    save_minicl(model, tmp_path / "new")
    (tmp_path / "old").mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("gap_")}, str(tmp_path / "old" / "model.safetensors"))
    cfg = json.loads((tmp_path / "new" / "config.json").read_text()); cfg.pop("gap_target")
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old = load_minicl(tmp_path / "old")
    assert old.model.cfg.gap_target is None and old.gap_shift[1] == 0.0
    np.testing.assert_allclose(old.encode_image(IMGS, progress=False),
                               MiniCLEncoder(model).with_gap(None).encode_image(IMGS, progress=False), atol=1e-6)


def test_minicl_native_config_and_held_out_report(tiny_minicl):
    model, _ = tiny_minicl
    m2, log = train_minicl(MiniCLConfig(n_steps=2, batch_size=16, max_train_images=32, gap_target=None), progress=False)
    assert log["gap_train"]["lam"] == 0.0 and log["gap_train"]["shifted"] == log["gap_train"]["native"]
    enc = MiniCLEncoder(model)
    rep = label_pair_gap(enc, n=40)
    assert rep["images"] == 40 and 0.6 < rep["gap_norm"] < 1.1 and -1 <= rep["paired_cos"] <= 1
    assert {k: rep[k] for k in ("shape_acc", "colour_acc", "joint_acc")} == \
           {k: v for k, v in label_retrieval(enc, n=40).items() if k in ("shape_acc", "colour_acc", "joint_acc")}
