"make test runs the suite on pytest-xdist workers, each pinned to its own cores (tests/conftest.py)."
import os

import pytest
from conftest import pin_worker_cores


def test_shares_are_disjoint_and_cover_the_cores():
    "Every worker gets a share, the shares do not overlap, together they are all the cores; too few cores: all."
    for cores in ([0, 1], [0, 1, 2, 3], [3, 5, 8], list(range(16))):
        for n in range(2, len(cores) + 1):
            shares = [pin_worker_cores(f"gw{i}", n, cores) for i in range(n)]
            assert all(shares) and sorted(c for s in shares for c in s) == sorted(cores)
    assert pin_worker_cores("gw2", 3, [0, 1]) == [0, 1] and pin_worker_cores("gw0", 1, [0, 1]) == [0, 1]


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER") or not hasattr(os, "sched_setaffinity"),
                    reason="pinning happens only in an xdist worker on Linux")
def test_this_worker_runs_on_its_share():
    "The worker's affinity (what kernels and DDP processes inherit) and torch's threads are its share."
    import torch
    n = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    mine = os.sched_getaffinity(0)
    assert len(mine) == torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
    assert n == 1 or len(mine) <= max(1, os.cpu_count() // n) + 1
