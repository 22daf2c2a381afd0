"The packaged models and data load offline and produce real output."
import numpy as np
import torch

from unicorn.packaged import load_smollm2, load_minilm, load_easyvqa, easyvqa_answers, easyvqa_images, package_dir, MissingPackageError
import pytest

def test_smollm2_generates_a_continuation():
    model, tok = load_smollm2()
    enc = tok.apply_chat_template([{"role": "user", "content": "Describe a blue square in one sentence."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad(): out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:]
    text = tok.decode(new, skip_special_tokens=True)
    assert len(new) > 3 and len(text.split()) >= 3, text

def test_minilm_gives_384d_unit_embeddings():
    e = load_minilm().encode(["a red circle", "a teal rectangle"], normalize_embeddings=True)
    assert e.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert float(e[0] @ e[1]) < 0.99   # different captions, different vectors

def test_easyvqa_tables():
    assert len(easyvqa_answers()) == 13
    tr, te = load_easyvqa("train"), load_easyvqa("test")
    assert len(tr) == 38575 and len(te) == 9673
    imgs = easyvqa_images("train")
    assert len(imgs) == 4000
    # some images have no question that reveals their shape or colour; the rest must agree with every question
    assert imgs["shape"].notna().mean() > 0.9 and imgs["color"].notna().mean() > 0.9
    m = tr.merge(imgs, on="image_id")
    assert not ((m.qtype == "shape") & (m.answer != m["shape"])).any()
    assert not ((m.qtype == "color") & (m.answer != m["color"])).any()

def test_missing_package_names_the_install_command():
    with pytest.raises(MissingPackageError, match="pip install --no-deps"): package_dir("not_a_real_package_abc")
