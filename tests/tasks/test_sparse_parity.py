"""task=sparse_parity (toy_quanta.tasks.sparse_parity): each member's subsets come from its own seed,
or from task.subset_seed when set. The task through the engine is tests/engine/test_train.py's
vehicle (evaluation against NumPy, finite training sets, ensembles over alpha and D)."""

from __future__ import annotations

import numpy as np

from conftest import tiny_config
from toy_quanta.engine.members import expand
from toy_quanta.tasks.sparse_parity import subsets_for


def test_subsets_follow_member_seed_or_subset_seed():
    cfg = tiny_config(ensemble={"seeds": 2})
    s = subsets_for(cfg, expand(cfg))
    assert s.shape == (2, cfg.task.n_tasks, cfg.task.k)
    assert not np.array_equal(s[0], s[1])
    fixed = tiny_config(ensemble={"seeds": 2}, task={"subset_seed": 9})
    s = subsets_for(fixed, expand(fixed))
    np.testing.assert_array_equal(s[0], s[1])


def test_the_subset_count_check_is_quick_for_a_huge_n():
    """C(2^30, 2^29) has about 3e8 digits: the check stops as soon as the count reaches n_tasks."""
    import time

    from toy_quanta.tasks.sparse_parity import _comb_up_to

    t0 = time.perf_counter()
    assert _comb_up_to(2**30, 2**29, 20) >= 20
    assert time.perf_counter() - t0 < 1.0
    for n, k in ((30, 3), (8, 8), (10, 0), (12, 6)):
        import math
        assert _comb_up_to(n, k, 10**9) == math.comb(n, k)
