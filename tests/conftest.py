import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

FIRST = ("tests/test_pipeline.py::test_smoke_pipeline",)   # the longest test starts first, on a worker of its own


def pin_worker_cores(worker: str, n_workers: int, cores: list[int]) -> list[int]:
    """The cores pytest-xdist worker `worker` ("gw0", "gw1", ...) of `n_workers` keeps: a disjoint share of `cores`, or
    all of them when there are fewer cores than workers. Two 2-thread torch jobs on 2 shared cores slow each other far
    more than 2x; one core each does not.

    >>> pin_worker_cores("gw1", 2, [0, 1]), pin_worker_cores("gw0", 2, [0, 1, 2, 3]), pin_worker_cores("gw0", 3, [0, 1])
    ([1], [0, 2], [0, 1])
    """
    if n_workers <= 1 or len(cores) < n_workers: return list(cores)
    return list(cores)[int(worker.removeprefix("gw")) % n_workers::n_workers]


def pytest_configure(config):
    """Under xdist, pin this worker, and everything it starts (papermill kernels, DDP processes, Ray), to its share of
    the cores: `unicorn.machine.usable_cores` reads the affinity, so training and scoring use that many threads."""
    worker, n = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or not hasattr(os, "sched_setaffinity"): return
    share = pin_worker_cores(worker, n, sorted(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, share)
    os.environ["OMP_NUM_THREADS"] = str(len(share))
    import torch
    torch.set_num_threads(len(share))


def pytest_collection_modifyitems(config, items):
    "Run the longest test first: with `--maxschedchunk 1` it then holds one worker while the other runs the rest."
    items.sort(key=lambda it: it.nodeid not in FIRST)
