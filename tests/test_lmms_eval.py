"""lmms-eval 0.7.3 for real: `lmms-eval eval --model unicorn_vlm` (found through the `lmms_eval.models` entry point)
and `simple_evaluate` on local tasks (one generation, one multiple-choice) with a tiny random VLM; no download."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from unicorn.fixtures import tiny_llama
from unicorn.lmms import LossPair, UnicornLMM, load_center_mean, load_image_encoder, lmms_manifest, lmms_eval_command, write_local_task
from unicorn.transfer import save_stats
from unicorn.vlm import UnicornVLM, save_vlm

ENCODER = """import numpy as np
TABLE = {"a": np.linspace(-1, 1, 6), "b": np.linspace(1, -1, 6) ** 2, "c": np.ones(6)}
def encode(visuals):
    "The toy image encoder: image key -> embedding [n, 6]."
    return np.stack([TABLE[v] for v in visuals])
"""
GEN = [{"question": "What shape?", "image": "a", "answer": "circle"}, {"question": "What colour?", "image": "b", "answer": "red"}]
MC = [{"question": "Which shape?", "image": "a", "choices": ["circle", "square", "triangle"], "answer": 0},
      {"question": "Which colour?", "image": "b", "choices": ["red", "blue"], "answer": 1},
      {"question": "Is it big?", "image": "c", "choices": ["yes", "no"], "answer": 0}]
MU_TEST, MU_TRAIN = np.full(6, 0.25), np.full(6, -0.5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "A saved tiny VLM, a toy encoder module, the run statistics and two local lmms-eval tasks."
    root = tmp_path_factory.mktemp("lmms")
    lm, tok = tiny_llama(seed=5)
    vlm = UnicornVLM.from_lm(lm, tok, emb_dim=6, k=2); vlm.cfg.lm_weights = "saved"
    save_vlm(vlm, root / "ck", tok)
    (root / "enc").mkdir(); (root / "enc" / "toy_encoder.py").write_text(ENCODER)
    save_stats(root / "stats.safetensors", mu_image_test=MU_TEST, mu_image_train=MU_TRAIN)
    write_local_task(root / "tasks", "toy_gen", GEN, "generate_until")
    write_local_task(root / "tasks", "toy_mc", MC, "multiple_choice")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "HF_HOME": str(root / "hf"), "PYTHONPATH": os.pathsep.join([str(root / "enc"), os.environ.get("PYTHONPATH", "")]),
                        "OMP_NUM_THREADS": "1"}
    return root, env


def _model_args(root: Path, centring: str = "paper") -> str:
    return f"pretrained={root / 'ck'},image_encoder=toy_encoder:encode,centring={centring},stats={root / 'stats.safetensors'}"


def _direct_losses(root: Path, centring: str = "paper") -> list[list[float]]:
    "Each MC document's per-choice loss, scored by `UnicornLMM` directly (the context and continuation lmms-eval builds)."
    from lmms_eval.api.instance import Instance
    sys.path.insert(0, str(root / "enc"))
    try: ad = UnicornLMM(pretrained=str(root / "ck"), image_encoder="toy_encoder:encode", centring=centring, stats=str(root / "stats.safetensors"))
    finally: sys.path.remove(str(root / "enc"))
    ad.task_dict = {"toy_mc": {"test": MC}}
    vis = lambda d: [d["image"]]
    return [[ad.loglikelihood([Instance("loglikelihood", (d["question"], " " + c, vis, i, "toy_mc", "test"), 0,
                                        {"task": "toy_mc", "doc_id": i, "repeats": 1})])[0][0] for c in d["choices"]]
            for i, d in enumerate(MC)]


def test_cli_eval_runs_generation_and_multiple_choice(setup, tmp_path):
    "The done-when of issue 14: `lmms-eval eval --model unicorn_vlm ...` on a local task, metrics for both items."
    root, env = setup
    cli = Path(sys.executable).parent / "lmms-eval"
    cmd = [str(cli), "eval", "--model", "unicorn_vlm", "--model_args", _model_args(root), "--tasks", "toy_gen,toy_mc",
           "--include_path", str(root / "tasks"), "--output_path", str(tmp_path / "out"), "--device", "cpu", "--log_samples"]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(next((tmp_path / "out").rglob("*_results.json")).read_text())["results"]
    assert res["toy_gen"]["exact_match,none"] in (0.0, 0.5, 1.0)
    losses = _direct_losses(root)
    want_acc = np.mean([int(np.argmin(l)) == d["answer"] for l, d in zip(losses, MC)])
    assert res["toy_mc"]["acc,none"] == pytest.approx(want_acc)        # lmms-eval's argmin over our losses
    samples = [json.loads(l) for l in next((tmp_path / "out").rglob("*samples_toy_mc.jsonl")).read_text().splitlines()]
    for s in samples:                                                    # each choice's (loss, is_greedy) came through
        np.testing.assert_allclose([float(r[0]) for r in s["filtered_resps"]], losses[s["doc_id"]], rtol=1e-4)


def test_simple_evaluate_in_process_with_c3_centring(setup, tmp_path, monkeypatch):
    "lmms-eval's own `simple_evaluate`, the model named by string, C3's training-mean centring."
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    root, env = setup
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME"): monkeypatch.setenv(k, env[k])
    monkeypatch.syspath_prepend(str(root / "enc"))
    out = simple_evaluate(model="unicorn_vlm", model_args=_model_args(root, "c3"), tasks=["toy_gen", "toy_mc"], device="cpu",
                          task_manager=TaskManager(include_path=str(root / "tasks")))
    res = out["results"]
    assert "exact_match,none" in res["toy_gen"] and {"acc,none", "acc_norm,none"} <= set(res["toy_mc"])
    losses = _direct_losses(root, "c3")
    assert res["toy_mc"]["acc,none"] == pytest.approx(np.mean([int(np.argmin(l)) == d["answer"] for l, d in zip(losses, MC)]))


def test_entry_point_resolves_the_module_level_class():
    from lmms_eval.models import get_model
    from lmms_eval.api.registry import get_model as get_legacy
    assert get_model("unicorn_vlm") is UnicornLMM and get_legacy("unicorn_vlm") is UnicornLMM
    assert lmms_manifest().simple_class_path == "unicorn.lmms.UnicornLMM"


def test_loss_pair_survives_the_upstream_stringification():
    "lmms-eval 0.7.3's `unwrap_generation_output` turns a (loss, is_greedy) tuple into a string; a `LossPair` stays a pair."
    from lmms_eval.api.instance import unwrap_generation_output
    assert unwrap_generation_output((1.5, False))[0] == "(1.5, False)"       # the bug worked around
    text, _ = unwrap_generation_output(LossPair(1.5, False))
    assert text == (1.5, False) and type(text) is tuple
    loss, greedy = LossPair(np.float32(2.0), np.bool_(True))
    assert (type(loss), type(greedy)) == (float, bool)


def test_centring_means_from_statistics(setup):
    root, _ = setup
    np.testing.assert_allclose(load_center_mean(centring="paper", stats=root / "stats.safetensors"), MU_TEST)
    np.testing.assert_allclose(load_center_mean(centring="c3", stats=root / "stats.safetensors"), MU_TRAIN)
    np.testing.assert_allclose(load_center_mean(f"{root / 'stats.safetensors'}:mu_image_train"), MU_TRAIN)
    with pytest.raises(ValueError, match="needs stats="): load_center_mean(centring="paper")
    with pytest.raises(ValueError, match="unknown centring"): load_center_mean(centring="other", stats=root / "stats.safetensors")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30).filter(lambda t: ":" not in t), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))
def test_image_encoder_spec_is_parsed_or_refused(no_colon, name):
    "A `--model_args` string without 'module:function' is refused; 'numpy:<name>' is numpy's `name` or an AttributeError."
    if no_colon:
        with pytest.raises(ValueError, match="module:function"): load_image_encoder(no_colon)
    try: enc = load_image_encoder(f"numpy:{name}")
    except AttributeError: assert not hasattr(np, name)
    else: assert enc is getattr(np, name)


# --- issue 26 item 3 and issue 27 item 4: no silent blind run, one image, images converted, the task's length, device

def test_cli_refuses_a_run_without_an_image_encoder(setup, tmp_path):
    """`--model_args pretrained=...` alone would answer every question blind: refused, naming the fix, no results.
    (lmms-eval 0.7.3's CLI logs the model's exception and still exits 0, so the message and the missing results tell.)"""
    root, env = setup
    cli = Path(sys.executable).parent / "lmms-eval"
    cmd = [str(cli), "eval", "--model", "unicorn_vlm", "--model_args", f"pretrained={root / 'ck'}", "--tasks", "toy_gen",
           "--include_path", str(root / "tasks"), "--output_path", str(tmp_path / "out"), "--device", "cpu"]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "pass blind=True to answer without images" in p.stdout + p.stderr
    assert not list((tmp_path / "out").rglob("*_results.json"))


def _adapter(root, **kw):
    sys.path.insert(0, str(root / "enc"))
    try: return UnicornLMM(pretrained=str(root / "ck"), **kw)
    finally: sys.path.remove(str(root / "enc"))


def _gen(i, doc_to_visual, gen_kwargs=None):
    from lmms_eval.api.instance import Instance
    return Instance("generate_until", ("Q?", gen_kwargs or {"until": ["\n"]}, doc_to_visual, i, "t", "test"), 0,
                    {"task": "t", "doc_id": i, "repeats": 1})


def test_blind_run_counts_and_second_image(setup):
    root, _ = setup
    ad = _adapter(root, blind=True, device="cpu")
    ad.task_dict = {"t": {"test": [{"image": "a"}, {"image": None}]}}
    out = ad.generate_until([_gen(0, lambda d: [d["image"]]), _gen(1, lambda d: [d["image"]])])
    assert len(out) == 2 and ad.report() == {"requests": 2, "without_image": 1, "image_not_read": 1}
    seen = _adapter(root, image_encoder="toy_encoder:encode")
    seen.task_dict = {"t": {"test": [{"image": "a"}, {"image": None}]}}
    seen.generate_until([_gen(1, lambda d: [d["image"]])])
    assert seen.report() == {"requests": 1, "without_image": 1, "image_not_read": 0}
    with pytest.raises(ValueError, match=r"task 't' split 'test' document 0: 2 images"):
        seen.generate_until([_gen(0, lambda d: [d["image"], "b"])])
    with pytest.raises(ValueError, match="blind='sometimes'"): _adapter(root, blind="sometimes")


def test_generation_length_comes_from_the_task(setup, monkeypatch):
    "The task's `max_new_tokens` reaches generation (issue 27: a fixed 4 cut every answer); none set: the model arg."
    import unicorn.lmms as L
    root, _ = setup
    asked = []
    monkeypatch.setattr(L, "generate_answers", lambda vlm, tok, prompts, emb, n: asked.append(n) or ["x"])
    ad = _adapter(root, image_encoder="toy_encoder:encode", max_new_tokens=9)
    ad.task_dict = {"t": {"test": [{"image": "a"}]}}
    ad.generate_until([_gen(0, lambda d: [d["image"]], {"until": ["\n"], "max_new_tokens": 21}),
                       _gen(0, lambda d: [d["image"]], {"until": ["\n"]})])
    assert asked == [21, 9]
    cfg = __import__("yaml").safe_load((root / "tasks" / "toy_gen.yaml").read_text())
    assert cfg["generation_kwargs"]["max_new_tokens"] == 32


def test_device_is_honoured(setup):
    import torch
    root, _ = setup
    ad = _adapter(root, image_encoder="toy_encoder:encode", device="cpu")
    assert ad.device == torch.device("cpu") and next(ad.vlm.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"): _adapter(root, image_encoder="toy_encoder:encode", device="cuda")


def test_images_reach_the_encoder_as_uint8_rgb(setup):
    "Float [0, 1], grey [h, w], RGBA and PIL images arrive as uint8 [h, w, 3]; a 0×0 image is refused, naming its document."
    from PIL import Image
    root, _ = setup
    got = []
    ad = _adapter(root, image_encoder=lambda vis: got.append(vis[0]) or np.ones((1, 6)))
    rgba = np.zeros((3, 3, 4), np.uint8); rgba[..., 0] = 200; rgba[0, 0, 3] = 255
    docs = [np.full((3, 3, 3), 0.25), np.full((5, 4), 7, np.uint8), rgba, Image.fromarray(rgba, "RGBA"), np.zeros((0, 0, 3))]
    ad.task_dict = {"t": {"test": [{"image": d} for d in docs]}}
    ad.generate_until([_gen(i, lambda d: [d["image"]], {"max_new_tokens": 1}) for i in range(4)])
    assert all(g.dtype == np.uint8 and g.ndim == 3 and g.shape[2] == 3 for g in got)
    assert (got[0] == 64).all() and (got[1] == 7).all() and got[1].shape == (5, 4, 3)
    assert list(got[2][0, 0]) == [200, 0, 0] and list(got[2][1, 1]) == [255, 255, 255]      # clear pixels: white
    assert np.array_equal(got[2], got[3])
    with pytest.raises(ValueError, match="document 4: the image is empty"):
        ad.generate_until([_gen(4, lambda d: [d["image"]])])


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 5), st.integers(0, 5), st.sampled_from([None, 1, 2, 3, 4, 5]),
       st.sampled_from(["uint8", "int64", "float32", "float64", "bool"]), st.one_of(st.floats(-2, 300), st.just(float("nan"))))
def test_any_array_becomes_rgb_or_a_named_error(h, w, c, dtype, fill):
    "Every array is either uint8 [h, w, 3] with the same h, w, or a ValueError that names the document."
    from unicorn.lmms import as_rgb_image
    shape = (h, w) if c is None else (h, w, c)
    try: a = np.full(shape, fill).astype(dtype)
    except (ValueError, OverflowError): return
    try: out = as_rgb_image(a, "doc 9")
    except ValueError as e: assert str(e).startswith("doc 9: ")
    else: assert out.dtype == np.uint8 and out.shape == (h, w, 3) and h * w > 0


def test_readme_example_with_the_shipped_minicl_encoder(setup, tmp_path):
    """The README's command as written, with `image_encoder=unicorn.lmms:minicl_encoder,encoder_folder=<minicl>`
    over PNG files named by the task (a random minicl of width 6 stands in for the run's trained one)."""
    from PIL import Image
    from unicorn.encoders import MiniCL, MiniCLConfig, save_minicl
    root, env = setup
    mf = save_minicl(MiniCL(MiniCLConfig(dim=6, width=4, gap_target=None)), tmp_path / "minicl")
    docs = []
    for i, (c, a) in enumerate([((255, 0, 0), "red"), ((0, 0, 255), "blue")]):
        Image.new("RGB", (64, 64), c).save(tmp_path / f"img{i}.png")
        docs.append({"question": "What colour?", "image": str(tmp_path / f"img{i}.png"), "answer": a})
    write_local_task(tmp_path / "tasks", "png_gen", docs, "generate_until", max_new_tokens=8)
    cmd = lmms_eval_command(root / "ck", mf, root / "stats.safetensors", "png_gen", tmp_path / "tasks", tmp_path / "out")
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(next((tmp_path / "out").rglob("*_results.json")).read_text())["results"]["png_gen"]
    assert 0.0 <= res["exact_match,none"] <= 1.0
    samples = [json.loads(l) for l in next((tmp_path / "out").rglob("*samples_png_gen.jsonl")).read_text().splitlines()]
    resp = lambda s: s["filtered_resps"] if isinstance(s["filtered_resps"], str) else s["filtered_resps"][0]
    assert len(samples) == 2 and all(isinstance(resp(s), str) for s in samples)
