"The VLM wiring: visual tokens at the placeholder, save → load gives identical logits (full, LoRA, frozen LM)."
import numpy as np, torch
from unicorn.fixtures import tiny_llama
from unicorn.vlm import UnicornVLM, expand_image_tokens, image_token_id, load_vlm, save_vlm, set_trainable

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
        v = set_trainable(UnicornVLM.from_lm(lm, tok, emb_dim=8, k=3, lm_source="external" if mode == "frozen" else "saved"), mode)
        with torch.no_grad():
            for p in v.parameters():
                if p.requires_grad: p.add_(0.05 * torch.randn_like(p))     # as if trained: every trainable weight moved
        ids, e = _batch(tok, 3)
        save_vlm(v, tmp_path / mode, tok)
        v2 = load_vlm(tmp_path / mode, lm=None if mode == "full" else tiny_llama(seed=1)[0])
        with torch.no_grad():
            assert torch.equal(v.eval()(ids, image_emb=e).logits, v2(ids, image_emb=e).logits), mode
