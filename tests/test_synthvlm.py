"SynthVLM: the diffusion path end to end on a tiny random pipeline; bad input is counted, never fatal."
import json
import numpy as np
import pytest

from unicorn.fixtures import tiny_clip
from unicorn.synthvlm import (DiffusionBackend, llm_generate_fn, curate_captions, hf_clip_encoder, load_diffusion,
                              select_pairs, synthesize, tiny_sdxl_pipeline, to_llava,
                              ssim_resize, load_image_file)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd") / "tiny-sdxl"
    tiny_sdxl_pipeline().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def encoder():
    return hf_clip_encoder(*tiny_clip())


class BlackFor(DiffusionBackend):
    "Wraps a backend; captions containing 'void' come out all black (as a NaN-latent SDXL image decodes)."
    def __init__(self, inner): self.inner = inner
    def generate(self, captions, caption_ids, n=1, *a, **k):
        out = self.inner.generate(captions, caption_ids, n, *a, **k)
        return [[np.zeros_like(im) for im in ims] if "void" in c else ims for c, ims in zip(captions, out)]


def test_tiny_pipeline_by_path_end_to_end(tiny_path, encoder, tmp_path):
    backend = load_diffusion(str(tiny_path), kind="sdxl")
    recs = [{"id": f"c{i}", "caption": t} for i, t in enumerate(
        ["a red circle in the middle", "a void of nothing", "a blue square on grey", "two green triangles"])]
    st = synthesize(recs, BlackFor(backend), *encoder, tmp_path, n=3, steps=2, height=16, width=16, top_frac=0.5,
                    ssim_size=8, progress=False)
    assert st["candidates"] == 12 and len(list((tmp_path / "images").glob("*.png"))) == 12
    assert st["all_black"] == 3 and st["no_valid_image"] == 1          # the black caption is skipped with reasons
    sel = [json.loads(l) for l in (tmp_path / "selected.jsonl").read_text().splitlines()]
    assert len(sel) == 1 == st["kept"]                                   # top half of the 3 valid captions, floored
    scores = [json.loads(l) for l in (tmp_path / "scores.jsonl").read_text().splitlines()]
    # best image per caption = max score among its candidates; kept = top captions in score order
    kept_all, _, _ = select_pairs(scores, top_frac=1.0, ssim_size=8)
    assert [k["score"] for k in kept_all] == sorted([k["score"] for k in kept_all], reverse=True)
    for k in kept_all:   # the kept image is the caption's best by score = max(cos, 0) + 0.5 * SSIM
        mine = [max(s["cos"], 0) + 0.5 * ssim_resize(load_image_file(s["image"]), 8)
                for s in scores if s["caption_id"] == k["caption_id"]]
        assert len(mine) == 3 and abs(k["score"] - max(mine)) < 1e-9
    assert sel[0]["caption_id"] == kept_all[0]["caption_id"]
    llava = to_llava(sel, tmp_path)
    assert llava[0]["image"].startswith("images/") and llava[0]["conversations"][0]["value"].startswith("<image>\n")


def test_selection_survives_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    cands = [{"caption_id": "ok", "image": good, "cos": 0.3},
             {"caption_id": "ok", "image": good, "cos": 0.1},
             {"caption_id": "nan", "image": good, "cos": float("nan")},
             {"caption_id": "black", "image": np.zeros((16, 16, 3), np.uint8), "cos": 0.9},
             {"caption_id": "file", "image": str(tmp_path / "broken.png"), "cos": 0.5},
             {"caption_id": "gone", "image": str(tmp_path / "missing.png"), "cos": 0.5},
             {"caption_id": "none", "image": None, "cos": 0.5}]
    kept, skipped, counts = select_pairs(cands, ssim_size=8)
    assert [k["caption_id"] for k in kept] == ["ok"] and kept[0]["cos"] == 0.3
    assert counts["nan_score"] == 1 and counts["all_black"] == 1 and counts["unreadable"] == 3
    assert counts["no_valid_image"] == 5
    assert all("reason" in s for s in skipped)


def test_ssim_term_changes_the_ranking():
    rng = np.random.default_rng(1)
    smooth = np.repeat(np.repeat(rng.integers(0, 255, (4, 4, 3)), 8, 0), 8, 1).astype(np.uint8)
    noisy = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    cands = [{"caption_id": "a", "image": noisy, "cos": 0.31}, {"caption_id": "b", "image": smooth, "cos": 0.30}]
    by_clip, _, _ = select_pairs(cands, use_ssim=False, ssim_size=8)
    with_ssim, _, _ = select_pairs(cands, lam=0.5, ssim_size=8)
    assert [k["caption_id"] for k in by_clip] == ["a", "b"]
    assert [k["caption_id"] for k in with_ssim] == ["b", "a"]           # structure kept at the encoder's size wins


def test_refiner_by_path(tiny_path, tmp_path):
    from diffusers import StableDiffusionXLImg2ImgPipeline
    base = tiny_sdxl_pipeline()
    keys = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
    StableDiffusionXLImg2ImgPipeline(**{k: v for k, v in base.components.items() if k in keys}).save_pretrained(tmp_path / "ref")
    backend = load_diffusion(str(tiny_path), kind="sdxl", refiner_path=str(tmp_path / "ref"))
    imgs = backend.generate(["a red circle"], ["c0"], n=2, steps=4, height=16, width=16)
    assert len(imgs[0]) == 2 and imgs[0][0].shape == (16, 16, 3)
    with pytest.raises(ValueError, match="unknown diffusion kind"):
        load_diffusion(str(tiny_path), kind="dalle")


def test_curation_with_an_llm_judge():
    judge = llm_generate_fn("transformers", "tiny", max_new_tokens=2)   # the Stage-1 backend interface
    recs = [{"id": "a", "caption": "A red circle is drawn in the centre of a white canvas."},
            {"id": "b", "caption": "!!"}]
    kept, rej, counts = curate_captions(recs, judge=judge)
    # a random LM answers neither yes nor no: counted as unparsed, the bad text fails earlier
    assert counts["input"] == 2 and counts["length"] == 1
    assert counts["kept"] + counts.get("judge_unparsed", 0) + counts.get("judge_no", 0) == 1
    assert {r["id"] for r in rej} >= {"b"}


# --- issue 13: record ids never become paths as they are ---
import re
from pathlib import Path
from hypothesis import given, settings, strategies as st
from unicorn.synthvlm import safe_stem, image_name

class NoiseBackend(DiffusionBackend):
    "Random images, fast: for tests of the file plumbing."
    def __init__(self): pass
    def generate(self, captions, caption_ids, n=1, *a, **k):
        rng = np.random.default_rng(0)
        return [[rng.integers(0, 255, (16, 16, 3)).astype(np.uint8) for _ in range(n)] for _ in captions]

def _unit(rows): rows = np.asarray(rows, np.float32); return rows / np.linalg.norm(rows, axis=1, keepdims=True)
_enc_t = lambda texts: _unit([[len(t) + 1.0, 1.0] for t in texts])
_enc_i = lambda ims: _unit([[float(im.mean()) + 1.0, 1.0] for im in ims])

def test_synthesize_ids_never_write_outside_out_dir(tmp_path):
    out = tmp_path / "run" / "synthvlm"
    ids = ["../../x", "../escape", "/tmp/abs", "a/b", "a-b", "a\\b", "..", ".", "", "a\x00b", "x" * 500, "ünï", 7]
    recs = [{"id": i, "caption": f"caption {k}"} for k, i in enumerate(ids)] + [{"id": "a/b", "caption": "again"}]
    st_ = synthesize(recs, NoiseBackend(), _enc_t, _enc_i, out, n=2, height=16, width=16, ssim_size=8, progress=False)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.parent == out / "images" or p.parent == out for p in files)
    assert len(list((out / "images").glob("*.png"))) == 2 * len(ids)               # unique per id, none overwritten
    assert st_["candidates"] == 2 * len(ids) and st_["duplicate_id"] == 1
    skipped = [json.loads(l) for l in (out / "skipped.jsonl").read_text().splitlines()]
    assert {"caption_id": "a/b", "image": None, "reason": "duplicate_id"} in skipped
    scores = [json.loads(l) for l in (out / "scores.jsonl").read_text().splitlines()]
    assert {s["caption_id"] for s in scores} == set(ids) and all(Path(s["image"]).parent == out / "images" for s in scores)

@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_safe_stem_property(a, b):
    "Any id: a plain file name (no separator, no leading dot, <= 59 chars) inside its folder; different ids, different names."
    for rid in (a, b):
        name = image_name(rid, 3)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*_3\.png", name) and len(safe_stem(rid)) <= 59
        assert (Path("/out/images") / name).resolve().parent == Path("/out/images")
    assert (safe_stem(a) == safe_stem(b)) == (a == b)


def test_clip_score_is_hessels():
    "CLIPScore = 2.5 · max(cos, 0) (Hessel et al. 2021, §3), not the ×100 convention."
    from unicorn.synthvlm import clip_score, with_prefix, CLIPSCORE_PREFIX
    assert clip_score(1.0) == 2.5 and clip_score(-0.3) == 0 and abs(clip_score(0.3) - 0.75) < 1e-12
    assert with_prefix(["a dog"], CLIPSCORE_PREFIX) == ["A photo depicts a dog"] == with_prefix(["a dog"], "A photo depicts ")


def test_paper_scoring_uses_the_prefix_and_clipscore_alone(tiny_path, encoder, tmp_path):
    "The paper preset's settings: captions scored behind 'A photo depicts', kept by CLIPScore with no SSIM term."
    seen = []
    enc_t = lambda texts: (seen.extend(texts), encoder[0](texts))[1]
    recs = [{"id": f"c{i}", "caption": t} for i, t in enumerate(["a red circle", "a blue square", "two green triangles"])]
    st = synthesize(recs, load_diffusion(str(tiny_path), kind="sdxl"), enc_t, encoder[1], tmp_path, n=2, steps=2,
                    height=16, width=16, top_frac=1.0, score_clip_weight=2.5, use_ssim=False,
                    text_prefix="A photo depicts", progress=False)
    assert st["use_ssim"] is False and st["text_prefix"] == "A photo depicts"
    assert sorted(set(seen)) == ["A photo depicts a blue square", "A photo depicts a red circle",
                                 "A photo depicts two green triangles"]
    sel = [json.loads(l) for l in (tmp_path / "selected.jsonl").read_text().splitlines()]
    for s in sel:
        assert s["ssim"] == 0.0 and abs(s["score"] - 2.5 * max(s["cos"], 0)) < 1e-12 and s["score"] == s["clip_score"]
        assert not s["caption"].startswith("A photo depicts")              # the stored caption is the caption
