"""lmms-eval 0.7.3 for real: `lmms-eval eval --model unicorn_vlm` (found through the `lmms_eval.models` entry point)
and `simple_evaluate` on local tasks (one generation, one multiple-choice) with a tiny random VLM; no download."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from unicorn.fixtures import tiny_llama
from unicorn.lmms import LossPair, UnicornLMM, load_center_mean, load_image_encoder, lmms_manifest, write_local_task
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
