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

def test_rerun_of_complete_store_writes_nothing(tmp_path):
    store = JsonlShards(tmp_path / "s")
    first = map_shards(range(20), lambda c: [{"id": i} for i in c], store, 6, progress=False)
    again = map_shards(range(20), lambda c: 1 / 0, store, 6, progress=False)   # fn is never called
    assert first["written"] == 4 and again == {"items": 20, "shards": 4, "written": 0, "resumed": 4}
