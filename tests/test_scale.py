"""Ray Data (local mode) runs a stage function shard by shard on Arrow columns and Ray's Parquet sink writes the
outputs: the same records as the plain sharded loop, atomic per job and resumable."""
import sys

import pyarrow as pa
import pytest

from unicorn.scale import ParquetShards, ray_map_batches, ray_map_shards
from unicorn.captions import reject_reason, clean_caption
from unicorn.runs import JsonlShards, map_shards


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    "One local Ray instance (1 CPU) for the module; test-module functions are shipped to workers by value."
    import ray, ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray workers cannot import a test module
    if ray.is_initialized(): ray.shutdown()                             # another module's instance
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def stage_fn(recs):
    "A real (model-free) stage function: clean + filter replies, as Stage 1 does per shard; nested and null fields."
    out = []
    for r in recs:
        cap, trunc = clean_caption(r["reply"])
        out.append({**r, "caption": cap, "reason": reject_reason(cap, r["seed"], trunc, min_words=3),
                    "shard_first": recs[0]["id"], "qa": [{"q": "n?", "a": len(recs)}], "emb": [0.25, None]})
    return out


def make_items(n=9):
    "Seed records with replies, one of them empty."
    items = [{"id": f"s{i}", "seed": "a red circle", "reply": f"Caption: A red circle number {i} on white. It is"}
             for i in range(n)]
    if n > 4: items[4]["reply"] = ""
    return items


def plain_loop(items, size):
    "What `map_shards` writes, shard by shard."
    return [[o for o in stage_fn(items[k:k + size])] for k in range(0, len(items), size)]


def test_ray_batches_equal_plain_loop():
    items = make_items()
    got = ray_map_batches(items, stage_fn, batch_size=4, num_cpus=1)
    assert got == [o for s in plain_loop(items, 4) for o in s]
    assert got[4]["reason"] == "empty" and got[0]["caption"].startswith("A red circle")


def test_sink_writes_what_map_shards_writes(tmp_path):
    "Same shards, same records, same order, same counts as `map_shards` into `JsonlShards`; files written by Ray."
    items = make_items()
    want = map_shards(items, stage_fn, JsonlShards(tmp_path / "plain"), shard_size=4, progress=False)
    got = ray_map_shards(items, stage_fn, tmp_path / "ray", shard_size=4, num_cpus=1)
    assert got == want == {"items": 9, "shards": 3, "written": 3, "resumed": 0}
    ps, js = ParquetShards(tmp_path / "ray"), JsonlShards(tmp_path / "plain")
    assert [ps.read(k) for k in range(3)] == [js.read(k) for k in range(3)] == plain_loop(items, 4)
    assert [p.name for p in (tmp_path / "ray").iterdir() if p.name.startswith(".")] == []   # staging removed
    table = ps.dataset().to_table()                         # the whole folder as one Arrow data set
    assert table.num_rows == 9 and {"caption", "qa", "emb", "shard"} <= set(table.column_names)
    qa = table.schema.field("qa").type                       # real columns, not JSON strings
    assert pa.types.is_list(qa) and str(qa.value_type) == "struct<q: string, a: int64>"
    assert str(table.schema.field("reason").type) == "string"   # all-null in shard 0, "empty" in shard 1: unified


def test_actor_factory_and_jobs(tmp_path):
    "A factory builds the stage function once per actor; `shards_per_job` splits the work into several sink writes."
    items = make_items(7)
    got = ray_map_shards(items, lambda: stage_fn, tmp_path, shard_size=2, factory=True, concurrency=1, shards_per_job=3)
    assert got["written"] == 4 and list(ParquetShards(tmp_path)) == [o for s in plain_loop(items, 2) for o in s]


def crash_on_s5(recs):
    "A stage that dies on the shard holding s5 (a worker crash mid-run)."
    if any(r["id"] == "s5" for r in recs): raise RuntimeError("worker died")
    return stage_fn(recs)


def test_crash_leaves_whole_shards_and_resumes(tmp_path):
    "A failed job promotes nothing (no partial shard), earlier jobs' shards stay, and a re-run does only the rest."
    items = make_items()
    with pytest.raises(Exception, match="worker died"):
        ray_map_shards(items, crash_on_s5, tmp_path, shard_size=2, shards_per_job=2)   # job 1: shards 0-1, job 2: 2-3
    ps = ParquetShards(tmp_path)
    assert [p.name for p in ps.shard_paths()] == ["shard=00000", "shard=00001"]
    assert [ps.read(k) for k in range(2)] == plain_loop(items, 2)[:2]
    assert ray_map_shards(items, stage_fn, tmp_path, shard_size=2) == {"items": 9, "shards": 5, "written": 3, "resumed": 2}
    assert list(ps) == [o for s in plain_loop(items, 2) for o in s]
    assert not any(p.name.startswith(".ray-staging") for p in tmp_path.iterdir())      # the dead job's staging is gone


def drop_all(recs):
    "A stage that filters every record out."
    return []


def test_empty_output_shard_counts_as_done(tmp_path):
    "A shard whose output is empty is written (an empty folder), so resuming does not run it again."
    assert ray_map_shards(make_items(3), drop_all, tmp_path, shard_size=2)["written"] == 2
    assert list(ParquetShards(tmp_path)) == [] and ParquetShards(tmp_path).exists(1)
    assert ray_map_shards(make_items(3), crash_on_s5, tmp_path, shard_size=2)["resumed"] == 2
