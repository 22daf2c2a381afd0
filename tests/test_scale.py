"Ray Data runs a stage function over batches and returns exactly what the plain sharded loop returns."
from unicorn.scale import ray_map_batches
from unicorn.captions import finalize_captions, reject_reason, clean_caption

def stage_fn(recs):
    "A real (model-free) stage function: clean + filter replies, as Stage 1 does per shard."
    out = []
    for r in recs:
        cap, trunc = clean_caption(r["reply"])
        out.append({**r, "caption": cap, "reason": reject_reason(cap, r["seed"], trunc, min_words=3)})
    return out

def test_ray_equals_plain_loop():
    import sys, ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray workers cannot import a test module
    items = [{"id": f"s{i}", "seed": "a red circle", "reply": f"Caption: A red circle number {i} on white. It is"} for i in range(9)]
    items[4]["reply"] = ""
    plain = [o for k in range(0, len(items), 4) for o in stage_fn(items[k:k + 4])]
    got = ray_map_batches(items, stage_fn, batch_size=4, num_cpus=1)
    assert got == plain
    assert got[4]["reason"] == "empty" and got[0]["caption"].startswith("A red circle")
