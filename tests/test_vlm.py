"The VLM wiring: visual tokens at the placeholder, save → load gives identical logits (full, LoRA, frozen LM)."
import json

import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st

from unicorn.fixtures import tiny_llama
from unicorn.vlm import (BARE_LM_NAMES, LM_SOURCES, UnicornVLM, expand_image_tokens, image_token_id, load_vlm,
                         parse_lm_source, read_vlm_config, save_vlm, set_trainable)

def _batch(tok, k):
    img = image_token_id(tok)
    ids = [expand_image_tokens(tok("Q:").input_ids + [img] + tok("what?").input_ids, img, k), tok("plain text!!").input_ids]
    n = max(map(len, ids))
    return torch.tensor([i + [tok.pad_token_id] * (n - len(i)) for i in ids]), torch.randn(2, 8)

def test_visual_tokens_replace_placeholder():
    lm, tok = tiny_llama(); v = UnicornVLM.from_lm(lm, tok, emb_dim=8, k=5)
    ids, e = _batch(tok, 5)
    h = v.embed(ids, e)
    pos = (ids[0] == image_token_id(tok)).nonzero().flatten()
    assert len(pos) == 5
    for p in pos: torch.testing.assert_close(h[0, p], v.projector(e[0]))
    torch.testing.assert_close(h[1], lm.get_input_embeddings()(ids[1]))

def test_save_load_identical_logits(tmp_path):
    for mode in ("full", "lora", "frozen"):
        lm, tok = tiny_llama(seed=1)
        v = set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=8, k=3, base_lm="" if mode == "full" else "fixture:tiny"), mode)
        with torch.no_grad():
            for p in v.parameters():
                if p.requires_grad: p.add_(0.05 * torch.randn_like(p))     # as if trained: every trainable weight moved
        ids, e = _batch(tok, 3)
        save_vlm(v, tmp_path / mode, tok)
        v2 = load_vlm(tmp_path / mode, lm=None if mode == "full" else tiny_llama(seed=1)[0])
        with torch.no_grad():
            assert torch.equal(v.eval()(ids, image_emb=e).logits, v2(ids, image_emb=e).logits), mode


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_lm_source_total(src):
    "Any string is a known prefix with a non-empty name, or a clear ValueError naming the source."
    try: prefix, name = parse_lm_source(src)
    except ValueError as e: assert repr(src) in str(e) or "non-empty" in str(e); return
    assert prefix in LM_SOURCES and name.strip()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(LM_SOURCES)), st.text(min_size=1, max_size=30).filter(str.strip))
def test_parse_lm_source_round_trips_a_prefixed_source(prefix, name):
    assert parse_lm_source(f"{prefix}:{name}") == (prefix, name)


def test_short_names_resolve():
    assert all(parse_lm_source(k) == tuple(v.split(":", 1)) for k, v in BARE_LM_NAMES.items())


@pytest.mark.parametrize("old, weights, base", [("saved", "saved", ""), ("adapter", "adapter", ""),
                                                ("packaged:smollm2", "base", "packaged:smollm2"), ("external", "base", "")])
def test_old_checkpoint_configs_still_read(tmp_path, old, weights, base):
    (tmp_path / "vlm_config.json").write_text(json.dumps({"emb_dim": 4, "hidden_size": 8, "lm_source": old, "base_lm": ""}))
    cfg = read_vlm_config(tmp_path)
    assert (cfg.lm_weights, cfg.base_lm) == (weights, base)


def test_frozen_lm_with_a_source_is_not_stored_and_without_one_is(tmp_path):
    for base, stored in (("fixture:tiny", False), ("", True)):
        v = set_trainable(UnicornVLM.from_lm(*tiny_llama(), emb_dim=8, base_lm=base), "frozen")
        save_vlm(v, tmp_path / f"m{stored}")
        assert (tmp_path / f"m{stored}" / "lm").is_dir() == stored
        assert load_vlm(tmp_path / f"m{stored}").lm.config.hidden_size == 32
