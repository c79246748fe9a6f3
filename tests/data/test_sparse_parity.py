"""Multitask sparse parity (toy_quanta.data.sparse_parity) against independent NumPy computations."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

from toy_quanta.data import sparse_parity as sp


def numpy_parity(bits_BxN: np.ndarray, subsets_TxK: np.ndarray, task_B: np.ndarray) -> np.ndarray:
    """Parity of each sample's subset bits, one Python loop per sample."""
    out = np.empty(len(task_B), np.int64)
    for b, t in enumerate(task_B):
        out[b] = sum(int(bits_BxN[b, i]) for i in subsets_TxK[t]) % 2
    return out


def zipf_reference(n_tasks: int, exponent: float) -> np.ndarray:
    """p_i = i^-exponent / Z over ranks 1..n_tasks, computed independently of the package."""
    w = np.array([i ** -exponent for i in range(1, n_tasks + 1)], dtype=np.float64)
    return w / w.sum()


# --- labels ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n_tasks,n,k,alpha", [(10, 20, 3, 0.4), (6, 40, 4, 0.0), (3, 70, 1, 1.0)])
def test_sample_labels_equal_numpy_parity(n_tasks, n, k, alpha):
    """sample(): every label is the parity of the bits at its subtask's subset; shapes and dtypes."""
    subsets = sp.draw_subsets(n_tasks, n, k, seed=3)
    task, bits, label = jax.jit(sp.sample, static_argnums=(3, 4))(jax.random.key(0), jnp.asarray(subsets), alpha, 4000, n)
    task, bits, label = np.asarray(task), np.asarray(bits), np.asarray(label)
    assert task.shape == (4000,) and bits.shape == (4000, n) and label.shape == (4000,)
    assert bits.dtype == np.uint8 and label.dtype == np.int32 and task.dtype == np.int32
    assert set(np.unique(bits).tolist()) <= {0, 1}
    assert task.min() >= 0 and task.max() < n_tasks
    assert len(np.unique(task)) == n_tasks  # 4000 draws reach every subtask at these sizes
    np.testing.assert_array_equal(label, numpy_parity(bits, subsets, task))
    # parity of uniform bits is a fair coin: 4000 draws, standard error 0.008
    assert abs(label.mean() - 0.5) < 0.04


def test_with_tasks_keeps_the_given_tasks_and_labels_them():
    """with_tasks(): the subtask of every sample is the one given; labels are its parity."""
    subsets = sp.draw_subsets(5, 12, 3, seed=1)
    task_in = np.random.default_rng(0).integers(0, 5, size=3000).astype(np.int32)
    task, bits, label = sp.with_tasks(jax.random.key(4), jnp.asarray(subsets), jnp.asarray(task_in), 12)
    np.testing.assert_array_equal(np.asarray(task), task_in)
    np.testing.assert_array_equal(np.asarray(label), numpy_parity(np.asarray(bits), subsets, task_in))


def test_per_task_set_layout_counts_and_labels():
    """per_task_set(): per_task points per subtask, sample j has subtask j % n_tasks, true labels."""
    subsets = sp.draw_subsets(7, 15, 3, seed=1)
    task, bits, label = map(np.asarray, sp.per_task_set(jax.random.key(2), jnp.asarray(subsets), 9, 15))
    assert task.shape == (63,) and bits.shape == (63, 15)
    np.testing.assert_array_equal(task, np.arange(63) % 7)
    np.testing.assert_array_equal(np.bincount(task, minlength=7), np.full(7, 9))
    np.testing.assert_array_equal(label, numpy_parity(bits, subsets, task))


def test_labels_depend_on_the_subset_bits_only():
    """Flipping a bit outside the subset keeps the label; flipping one inside flips it (NumPy check
    of the package's parity function on hand-made inputs)."""
    subsets = np.array([[0, 2, 5], [1, 3, 4]], np.int32)
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(200, 8)).astype(np.uint8)
    task = rng.integers(0, 2, size=200).astype(np.int32)
    base = np.asarray(sp.parity(jnp.asarray(bits), jnp.asarray(subsets), jnp.asarray(task)))
    np.testing.assert_array_equal(base, numpy_parity(bits, subsets, task))
    flipped = bits.copy()
    flipped[:, 6] ^= 1  # bit 6 is in no subset
    np.testing.assert_array_equal(np.asarray(sp.parity(jnp.asarray(flipped), jnp.asarray(subsets), jnp.asarray(task))), base)
    flipped = bits.copy()
    flipped[np.arange(200), subsets[task, 1]] ^= 1  # one bit of each sample's own subset
    np.testing.assert_array_equal(np.asarray(sp.parity(jnp.asarray(flipped), jnp.asarray(subsets), jnp.asarray(task))), 1 - base)


# --- bits ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 45, 64, 100])
def test_random_bits_are_binary_and_uniform(n):
    """random_bits(): shape (batch, n) uint8 of 0/1 for any n (also not a multiple of 32, and n > 32);
    every column's mean within 0.02 of 0.5 (20,000 draws: standard error 0.0035, so > 5 sigma)."""
    bits = np.asarray(sp.random_bits(jax.random.key(n), 20_000, n))
    assert bits.shape == (20_000, n) and bits.dtype == np.uint8
    assert set(np.unique(bits).tolist()) == {0, 1}
    assert np.all(np.abs(bits.mean(0) - 0.5) < 0.02), bits.mean(0)
    assert abs(bits.mean() - 0.5) < 0.01


@pytest.mark.parametrize("n", [33, 100])
def test_random_bits_columns_are_independent(n):
    """No two bit columns (also across the 32-bit word boundary) are correlated beyond |r| < 0.04."""
    bits = np.asarray(sp.random_bits(jax.random.key(11), 20_000, n)).astype(np.float64)
    corr = np.corrcoef(bits.T)[np.triu_indices(n, 1)]
    assert np.abs(corr).max() < 0.04
    # rows are not repeated either (64 > 2^n would be impossible; here collisions are ~0)
    assert len({r.tobytes() for r in bits.astype(np.uint8)}) == 20_000


def test_random_bits_depend_on_the_key():
    a = np.asarray(sp.random_bits(jax.random.key(0), 100, 40))
    b = np.asarray(sp.random_bits(jax.random.key(0), 100, 40))
    c = np.asarray(sp.random_bits(jax.random.key(1), 100, 40))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3


# --- subtask frequencies ---------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_subtask_frequencies_follow_zipf_chisquare(alpha):
    """200k draws of zipf_tasks pass a chi-square test against p_i ∝ i^-(alpha+1), and the same
    test rejects the other convention (alpha as the whole exponent), so it has the power to fail."""
    n_tasks, draws = 10, 200_000
    tasks = np.asarray(sp.zipf_tasks(jax.random.key(7), n_tasks, alpha, draws))
    assert tasks.min() >= 0 and tasks.max() < n_tasks
    counts = np.bincount(tasks, minlength=n_tasks)
    right = chisquare(counts, zipf_reference(n_tasks, alpha + 1.0) * draws).pvalue
    wrong = chisquare(counts, zipf_reference(n_tasks, alpha) * draws).pvalue
    assert right > 1e-3, right
    assert wrong < 1e-6, wrong


def test_sample_draws_subtasks_by_zipf():
    """The subtasks of sample() itself (not just zipf_tasks) follow the law, for alpha 0.4."""
    n_tasks, draws = 8, 200_000
    subsets = jnp.asarray(sp.draw_subsets(n_tasks, 10, 2, seed=0))
    task, _, _ = sp.sample(jax.random.key(3), subsets, 0.4, draws, 10)
    counts = np.bincount(np.asarray(task), minlength=n_tasks)
    assert chisquare(counts, zipf_reference(n_tasks, 1.4) * draws).pvalue > 1e-3
    assert chisquare(counts, zipf_reference(n_tasks, 0.4) * draws).pvalue < 1e-6


def test_zipf_probs_is_the_papers_law():
    """zipf_probs(n, alpha) = i^-(alpha+1)/Z; the headline alpha 0.4 is exponent 1.4."""
    np.testing.assert_allclose(sp.zipf_probs(500, 0.4), zipf_reference(500, 1.4), rtol=1e-12)
    np.testing.assert_allclose(sp.zipf_probs(7, 0.0), zipf_reference(7, 1.0), rtol=1e-12)
    assert math.isclose(sp.zipf_probs(500, 0.4).sum(), 1.0)


def test_traced_alpha_gives_each_member_its_own_law():
    """alpha may be a traced value (ensembles over alpha): each vmapped member follows its own law."""
    alphas = jnp.array([0.0, 2.0])
    tasks = jax.vmap(lambda a: sp.zipf_tasks(jax.random.key(0), 5, a, 100_000))(alphas)
    for a, row in zip([0.0, 2.0], np.asarray(tasks)):
        counts = np.bincount(row, minlength=5)
        assert chisquare(counts, zipf_reference(5, a + 1.0) * 100_000).pvalue > 1e-3


# --- subsets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n_tasks,n,k", [(200, 30, 3), (50, 12, 4), (10, 100, 3), (8, 8, 1)])
def test_subsets_distinct_sorted_in_range(n_tasks, n, k):
    """draw_subsets: n_tasks distinct rows, each k distinct sorted indices in [0, n), int32."""
    a = sp.draw_subsets(n_tasks, n, k, seed=5)
    assert a.shape == (n_tasks, k) and a.dtype == np.int32
    assert len({tuple(r) for r in a.tolist()}) == n_tasks
    assert all(len(set(r)) == k for r in a.tolist())
    assert np.all(np.diff(a, axis=1) > 0)
    assert a.min() >= 0 and a.max() < n


def test_subsets_reproducible_from_seed():
    """Same seed gives the same array; a different seed a different one."""
    a = sp.draw_subsets(50, 30, 3, seed=5)
    np.testing.assert_array_equal(a, sp.draw_subsets(50, 30, 3, seed=5))
    assert not np.array_equal(a, sp.draw_subsets(50, 30, 3, seed=6))
    # also in the dense regime
    d = sp.draw_subsets(18, 6, 3, seed=1)
    np.testing.assert_array_equal(d, sp.draw_subsets(18, 6, 3, seed=1))
    assert not np.array_equal(d, sp.draw_subsets(18, 6, 3, seed=2))


def test_dense_regime_all_subsets():
    """n_tasks = C(n, k) (n=6, k=3, 20 subsets) gives every subset exactly once; near-dense works too."""
    a = sp.draw_subsets(20, 6, 3, seed=0)
    assert sorted(map(tuple, a.tolist())) == list(itertools.combinations(range(6), 3))
    b = sp.draw_subsets(19, 6, 3, seed=0)
    assert len({tuple(r) for r in b.tolist()}) == 19 and np.all(np.diff(b, axis=1) > 0)
    c = sp.draw_subsets(math.comb(10, 2), 10, 2, seed=4)
    assert sorted(map(tuple, c.tolist())) == list(itertools.combinations(range(10), 2))


def test_subsets_are_not_biased_to_low_indices():
    """Every index is used about equally often over many subsets (a uniform draw of subsets)."""
    a = sp.draw_subsets(2000, 40, 3, seed=0)
    counts = np.bincount(a.ravel(), minlength=40)
    assert chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("n_tasks,n,k", [(21, 6, 3), (0, 6, 3), (1, 3, 4), (1, 3, 0)])
def test_impossible_subset_requests_raise(n_tasks, n, k):
    with pytest.raises(ValueError):
        sp.draw_subsets(n_tasks, n, k, seed=0)


# --- disjoint subsets and the ±1 encoding ---------------------------------------------------------

@pytest.mark.parametrize("n_tasks,n,k", [(5, 32, 3), (4, 8, 2), (1, 10, 3), (10, 30, 3)])
def test_disjoint_subsets_share_no_bit(n_tasks, n, k):
    """Nam et al.'s layout: n_tasks * k distinct bits, each subset sorted, none shared."""
    for seed in range(5):
        subsets = sp.draw_subsets(n_tasks, n, k, seed, "disjoint")
        assert subsets.shape == (n_tasks, k) and subsets.dtype == np.int32
        assert len(np.unique(subsets)) == n_tasks * k and subsets.min() >= 0 and subsets.max() < n
        assert (np.diff(subsets, axis=1) > 0).all()
    draws = {tuple(sp.draw_subsets(n_tasks, n, k, s, "disjoint").ravel()) for s in range(20)}
    assert len(draws) > 1 or n_tasks * k == n  # the seed chooses them


def test_disjoint_subsets_need_room_and_distinct_stays_as_it_was():
    with pytest.raises(ValueError, match="n_tasks \\* k <= n"):
        sp.draw_subsets(6, 17, 3, 0, "disjoint")
    with pytest.raises(ValueError, match="distinct"):
        sp.draw_subsets(2, 10, 3, 0, "overlapping")
    # the default kind draws what it always drew (the same stream, the same subsets)
    np.testing.assert_array_equal(sp.draw_subsets(20, 30, 3, 7), sp.draw_subsets(20, 30, 3, 7, "distinct"))


def test_encode_maps_bits_to_plus_minus_one_and_keeps_zero_one():
    bits = np.random.default_rng(0).integers(0, 2, (50, 9)).astype(np.uint8)
    same = sp.encode(jnp.asarray(bits), "zero_one")
    assert same.dtype == jnp.uint8 and np.array_equal(np.asarray(same), bits)
    pm = np.asarray(sp.encode(jnp.asarray(bits), "plus_minus"))
    assert pm.dtype == np.int8 and set(np.unique(pm).tolist()) == {-1, 1}
    np.testing.assert_array_equal(pm, 2 * bits.astype(np.int64) - 1)
    # the label (parity of the bits) is the product of the ±1 coordinates up to (-1)^k
    subsets = sp.draw_subsets(4, 9, 3, 0)
    task = np.arange(50) % 4
    parity = numpy_parity(bits, subsets, task)
    product = np.prod(np.take_along_axis(pm, subsets[task], axis=1), axis=1)
    np.testing.assert_array_equal(product, (-1) ** 3 * (1 - 2 * parity))
