"A sharded stage killed with SIGKILL at any moment resumes to exactly the records of an uninterrupted run."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest

from unicorn.runs import JsonlShards, EmbeddingShards, map_shards

WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from unicorn.runs import JsonlShards, EmbeddingShards, map_shards
    kind, root, n, size, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    def records(chunk):
        time.sleep(delay)
        return [{"id": f"r{i}", "text": "x" * (i % 97), "value": i * i} for i in chunk]
    def embeddings(chunk):
        time.sleep(delay)
        return [f"r{i}" for i in chunk], np.stack([np.full(8, i, np.float32) for i in chunk])
    store = JsonlShards(root) if kind == "jsonl" else EmbeddingShards(root, dim=8)
    map_shards(range(n), records if kind == "jsonl" else embeddings, store, size, progress=False)
""")

def _start(kind, root, n=200, size=7, delay=0.02):
    return subprocess.Popen([sys.executable, "-c", WRITER, kind, str(root), str(n), str(size), str(delay)])

def _contents(kind, root):
    if kind == "jsonl": return [json.dumps(r, sort_keys=True) for r in JsonlShards(root)]
    s = EmbeddingShards(root, dim=8).load_all()
    return list(zip(s.ids, s.emb.tolist()))

@pytest.mark.parametrize("kind", ["jsonl", "embeddings"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, kind):
    ref = tmp_path / "ref"
    assert _start(kind, ref, delay=0).wait(timeout=120) == 0
    expected = _contents(kind, ref)
    assert len(expected) == 200
    run = tmp_path / "run"
    kills = 0
    for target, extra in ((3, 0.0), (9, 0.013), (15, 0.031)):   # kill at several moments, some mid-shard
        p = _start(kind, run, delay=0.05)
        deadline = time.time() + 60
        while len(list(Path(run).glob("part-*"))) < target and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(extra)
        assert p.poll() is None, "the writer finished before it could be killed"
        os.kill(p.pid, signal.SIGKILL); p.wait(); kills += 1
    done_before = len(list(Path(run).glob("part-*")))
    assert 15 <= done_before < 29, f"expected a part-way write, found {done_before} of 29 shards"
    assert _start(kind, run).wait(timeout=120) == 0   # resume
    assert _contents(kind, run) == expected
    assert sorted(p.name for p in Path(run).glob("part-*")) == sorted(p.name for p in Path(ref).glob("part-*"))
    assert list(Path(run).glob(".*.tmp")) == []       # temp files of the killed writers were cleaned on resume

def test_rerun_of_complete_store_writes_nothing(tmp_path):
    store = JsonlShards(tmp_path / "s")
    first = map_shards(range(20), lambda c: [{"id": i} for i in c], store, 6, progress=False)
    again = map_shards(range(20), lambda c: 1 / 0, store, 6, progress=False)   # fn is never called
    assert first["written"] == 4 and again == {"items": 20, "shards": 4, "written": 0, "resumed": 4}

STAGE = textwrap.dedent("""
    import sys, time
    from unicorn.runs import JsonlShards, RunFolder, StageSettingsError, map_shards
    root, tokens, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    run = RunFolder(root, profile="mini")
    def reply(chunk):
        time.sleep(delay)
        return [{"id": f"r{i}", "text": "y" * tokens} for i in chunk]
    try:
        with run.run_stage("instructions", params={"max_new_tokens": tokens, "seed": 0}) as info:
            if info is not None: info["records"] = map_shards(range(64), reply, JsonlShards(run.path("instructions")), 4, progress=False)
    except StageSettingsError as e: print(e); sys.exit(3)
""")

def test_sigkilled_stage_resumed_with_other_settings_refuses_then_resumes_exactly(tmp_path):
    "Killed at 6 of 16 shards with max_new_tokens=24: resuming with 48 stops, naming the setting; with 24 it finishes."
    go = lambda root, tokens, delay=0.0: subprocess.Popen([sys.executable, "-c", STAGE, str(root), str(tokens), str(delay)],
                                                          stdout=subprocess.PIPE, text=True)
    assert go(tmp_path / "ref", 24).wait(timeout=120) == 0
    p = go(tmp_path / "run", 24, delay=0.05)
    deadline = time.time() + 60
    while len(list((tmp_path / "run" / "instructions").glob("part-*"))) < 6 and p.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert p.poll() is None, "the stage finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL); p.wait()
    shards = lambda root: sorted((root / "instructions").glob("part-*"))
    before = [q.read_bytes() for q in shards(tmp_path / "run")]
    assert 6 <= len(before) < 16
    p = go(tmp_path / "run", 48)
    assert p.wait(timeout=120) == 3 and "was interrupted (status 'running') with other settings: max_new_tokens = 24 there, 48 now" in p.stdout.read()
    assert [q.read_bytes() for q in shards(tmp_path / "run")] == before        # nothing written under the new settings
    assert go(tmp_path / "run", 24).wait(timeout=120) == 0                       # same settings: resumes ...
    assert [q.read_bytes() for q in shards(tmp_path / "run")] == [q.read_bytes() for q in shards(tmp_path / "ref")]  # ... exactly
    assert list((tmp_path / "run").rglob("*.tmp")) == []
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["instructions"]["params"]["max_new_tokens"] == 24
