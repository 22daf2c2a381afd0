"Encoders: one interface over HF CLIP, OpenCLIP, LLM2CLIP-style and minicl; shards with ids; tiny random models only."
import json
import numpy as np
import pytest
import torch

from unicorn.encoders import (load_encoder, HFDualEncoder, LLM2CLIPEncoder, MiniCL, MiniCLConfig, MiniCLEncoder,
                              encode_to_shards, save_minicl, load_minicl, train_minicl, label_aware_clip_loss,
                              minicl_train_pairs, label_pair_gap, label_retrieval, minicl_config, minicl_label_captions,
                              render_text_image, tpi_phrase_pool, tpi_reading, tpi_label_accuracy, label_gap_shape,
                              gap_sweep, MINICL_TEMPLATES)
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
    return train_minicl(minicl_config("painted", n_steps=6, batch_size=32, max_train_images=80), progress=False)


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
    cfg = json.loads((tmp_path / "new" / "config.json").read_text())
    for k in ("gap_target", "gap_mode", "temperature", "cone", "tpi_phrases", "tpi_batch"): cfg.pop(k)
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old = load_minicl(tmp_path / "old")
    assert old.model.cfg.gap_target is None and old.gap_shift[1] == 0.0
    assert (old.model.cfg.gap_mode, old.model.cfg.temperature, old.model.cfg.cone) == ("trained", None, 0.0)
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


def test_minicl_settings_are_named_and_checked():
    assert (MiniCLConfig().gap_mode, MiniCLConfig().gap_target) == ("trained", None)
    assert minicl_config() == MiniCLConfig()
    p = minicl_config("painted", n_steps=5)
    assert (p.gap_mode, p.gap_target, p.temperature, p.cone, p.n_steps) == ("painted", 0.82, None, 0.0, 5)
    n = minicl_config("native")
    assert (n.gap_mode, n.gap_target, n.temperature, n.cone) == ("trained", None, None, 0.0)
    with pytest.raises(ValueError, match="unknown minicl setting 'clip'"): minicl_config("clip")
    with pytest.raises(ValueError, match="gap_target must be set exactly when"): MiniCLConfig(gap_mode="painted")
    with pytest.raises(ValueError, match="gap_target must be set exactly when"): MiniCLConfig(gap_target=0.5)
    with pytest.raises(ValueError, match="gap_mode must be one of"): MiniCLConfig(gap_mode="drawn")


def test_cone_init_and_fixed_temperature():
    cfg = MiniCLConfig(cone=5.0, temperature=0.02)
    torch.manual_seed(0)
    a = MiniCL(replace_cfg(cfg, cone=0.0))
    torch.manual_seed(0)
    b = MiniCL(cfg)
    dirs = []
    for la, lb in ((a.image.head[-1], b.image.head[-1]), (a.text_head[-1], b.text_head[-1])):
        torch.testing.assert_close(la.weight, lb.weight)                        # only the bias moves
        d = lb.bias - la.bias
        dirs.append(d / d.norm())
        assert abs(d.norm().item() - 5.0) < 1e-4
    assert abs((dirs[0] @ dirs[1]).item()) < 0.5                                # one random direction per tower
    assert not b.logit_scale.requires_grad and abs(b.logit_scale.exp().item() - 50) < 1e-3
    assert a.logit_scale.requires_grad is False and MiniCL(minicl_config("native")).logit_scale.requires_grad
    model, log = train_minicl(MiniCLConfig(n_steps=3, batch_size=16, max_train_images=32, cone=5.0), progress=False)
    assert log["temperature"] == 0.01 and log["gap_train"]["lam"] == 0.0         # fixed τ; no shift: the gap is trained
    assert MiniCLEncoder(model).name.endswith("trained gap")


def replace_cfg(cfg, **kw):
    from dataclasses import replace
    return replace(cfg, **kw)


def test_render_text_image_deterministic_and_legible():
    a = render_text_image("red circle")
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render_text_image("red circle"))
    ink = a.min(2) < 128
    assert 0.03 < ink.mean() < 0.5 and (a[0] == 255).all() and (a[:, 0] == 255).all()    # white margin, visible ink
    rows = np.where(ink.any(1))[0]
    assert rows[-1] - rows[0] > 25                                     # wrapped onto two lines, large type
    assert not np.array_equal(a, render_text_image("red square"))
    assert render_text_image("word " * 40, size=32).shape == (32, 32, 3)   # long text: small, clipped, no error
    for bad in ("", "   ", None):
        with pytest.raises(ValueError, match="render_text_image"): render_text_image(bad)


from hypothesis import given, settings, strategies as st


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=0, max_size=60))
def test_render_text_image_any_text(text):
    if not text.split():
        with pytest.raises(ValueError, match="empty or non-text"): render_text_image(text)
        return
    a = render_text_image(text, size=48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render_text_image(text, size=48))


def test_tpi_pool_excludes_bench_captions():
    train, held = tpi_phrase_pool(), tpi_phrase_pool(split="heldout")
    assert len(held) == 300 and len(train) > 3000 and not set(train) & set(held)
    labels = set(minicl_label_captions()[1])
    assert not (set(train) | set(held)) & labels
    assert not any(p.startswith(("a ", "the ")) for p in train + held)              # no label template's opening
    assert tpi_phrase_pool(5) == train[:5] and tpi_phrase_pool(5, seed=1) != train[:5]
    assert "red circle" in train + held and "a red circle" in labels
    with pytest.raises(ValueError, match="split must be"): tpi_phrase_pool(3, "test")


def test_tpi_reading_pairs_train_and_report():
    model, log = train_minicl(MiniCLConfig(n_steps=2, batch_size=16, max_train_images=32, tpi_phrases=20, tpi_batch=8),
                              progress=False)
    assert log["phrases"] == 20 and len(log["loss"]) == 2
    enc = MiniCLEncoder(model)
    r = tpi_reading(enc, n=12)
    assert r["phrases"] == 12 and 0 <= r["read_R@1"] <= r["read_R@5"] <= 1
    acc = tpi_label_accuracy(enc, n=16)
    assert acc["images"] == 16 and 0 <= acc["joint_acc"] <= min(acc["shape_acc"], acc["colour_acc"])
    # the TPI accuracy is the label accuracy with rendered label captions (through the image tower) as the prototypes
    from unicorn.encoders import _labelled_images, _label_acc
    labels, texts = minicl_label_captions()
    _, X, y = _labelled_images("test", 16)
    proto = enc.encode_image([render_text_image(c) for c in texts], progress=False)
    ref = _label_acc(enc.encode_image(list(X), progress=False), proto, y.numpy(), labels)
    assert {k: acc[k] for k in ref} == ref


def test_label_gap_shape_and_sweep(tiny_minicl):
    enc = MiniCLEncoder(tiny_minicl[0])
    sh = label_gap_shape(enc.with_gap(None), n=48, k=4)
    assert sh["images"] == 48 and sh["angles_k"] == 4 and sh["trace_ratio"] > 0
    assert abs(sh["gap_norm"] - label_pair_gap(enc.with_gap(None), n=48)["gap_norm"]) < 1e-9
    sw = gap_sweep(enc, [None, 0.5], n=24)
    assert sw.target.tolist()[1] == 0.5 and abs(sw.gap_norm[1] - 0.5) < 0.1
