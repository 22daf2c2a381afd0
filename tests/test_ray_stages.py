"""Stages 1 and 2 on Ray Data (issue 27 item 5): `engine="ray"` (local mode, 2 actors over the tiny fixture LM) writes
the same raw shards and keeps the same records as the local path; resuming on Ray skips the finished shards."""
import json

import pytest

from unicorn.captions import CaptionsConfig, run_captions
from unicorn.fixtures import tiny_llama
from unicorn.instructions import InstructionsConfig, run_instructions
from unicorn.llm import TransformersBackend
from unicorn.runs import JsonlShards, RunLayout

SEEDS = [{"id": f"seed-{i}", "seed": s, "domain": "demo", "source_image": f"train-img{i}", "label": s}
         for i, s in enumerate(["a red circle", "a blue square", "a green triangle", "a teal circle", "a gray rectangle"])]
CAPS = [{"id": f"cap-{i}", "caption": f"A {c} shape sits in the middle of a plain white background, seen from above."}
        for i, c in enumerate(["red round", "blue square", "green pointed", "teal round"])]


@pytest.fixture(scope="module", autouse=True)
def ray_down_after():
    "The engine starts Ray itself; shut it down after this module, so other modules start theirs."
    yield
    import ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny():
    "A factory of fresh backends over one tiny LM (a used backend holds an xgrammar compiler Ray cannot pickle)."
    lm, tok = tiny_llama()
    return lambda: TransformersBackend(lm, tok, batch_size=2)


def _stores(root, *names):
    "Every shard file's bytes of each store."
    lay = RunLayout(root)
    return {n: [p.read_bytes() for p in JsonlShards(getattr(lay, n)).shard_paths()] for n in names}


def test_stage1_and_stage2_on_ray_equal_the_local_path(tiny, tmp_path):
    cfg1 = CaptionsConfig(shard_size=2, max_new_tokens=10, temperature=0.7, batch_size=2, max_retries=0,
                          min_words=3, attribute_vocab=None)
    local = run_captions(SEEDS, tiny(), cfg1, tmp_path / "local", progress=False)
    ray_ = run_captions(SEEDS, tiny(), cfg1, tmp_path / "ray", progress=False, engine="ray", workers=2)
    assert ray_ == local and local["shards"] == {"items": 5, "shards": 3, "written": 3, "resumed": 0}
    names = ("captions_raw", "captions", "captions_rejected")
    assert _stores(tmp_path / "ray", *names) == _stores(tmp_path / "local", *names)
    assert len(list(JsonlShards(RunLayout(tmp_path / "ray").captions_raw))) == 5
    cfg2 = InstructionsConfig(shard_size=2, max_new_tokens=16, max_retries=0)
    l2 = run_instructions(CAPS, tiny(), cfg2, tmp_path / "local", progress=False)
    r2 = run_instructions(CAPS, tiny(), cfg2, tmp_path / "ray", progress=False, engine="ray", workers=2)
    assert r2 == l2
    names = ("instructions_raw",)
    assert _stores(tmp_path / "ray", *names) == _stores(tmp_path / "local", *names)
    assert RunLayout(tmp_path / "ray").llava_json.read_bytes() == RunLayout(tmp_path / "local").llava_json.read_bytes()
    again = run_captions(SEEDS, tiny(), cfg1, tmp_path / "ray", progress=False, engine="ray")    # all done: resumed
    assert again["shards"] == {"items": 5, "shards": 3, "written": 0, "resumed": 3}


def test_a_used_backend_goes_to_ray_without_its_grammar_compiler(tiny, tmp_path):
    """A backend that has compiled xgrammar grammars is copied to the actors without its compiler (it is rebuilt
    there), so the Ray run of a used backend writes what the local run of the same backend writes."""
    be = tiny()
    cfg = InstructionsConfig(shard_size=2, max_new_tokens=8, max_retries=0)
    run_instructions(CAPS[:1], be, cfg, tmp_path / "a", progress=False)
    assert be._compiler is not None
    run_instructions(CAPS, be, cfg, tmp_path / "ray", progress=False, engine="ray")
    run_instructions(CAPS, be, cfg, tmp_path / "local", progress=False)
    assert _stores(tmp_path / "ray", "instructions_raw") == _stores(tmp_path / "local", "instructions_raw")


def test_unknown_engine_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        run_captions(SEEDS, tiny(), CaptionsConfig(shard_size=2), tmp_path, progress=False, engine="spark")
