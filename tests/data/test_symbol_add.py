"""The effective theory's toy task's data (toy_quanta.data.symbol_add): the table of unordered pairs
and their sums, the token layout, the parallelograms and the RQI of planted embeddings, against
brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from toy_quanta.analysis.rqi import parallelograms, rqi
from toy_quanta.data import symbol_add

P = 10


def test_the_table_is_the_unordered_pairs_and_their_sums():
    i_N, j_N, sum_N = symbol_add.table(P)
    expected = [(i, j, i + j) for i in range(P) for j in range(i, P)]  # row-major, j >= i
    assert len(expected) == 55
    assert list(zip(i_N.tolist(), j_N.tolist(), sum_N.tolist())) == expected
    assert i_N.dtype == j_N.dtype == sum_N.dtype == np.int32
    assert symbol_add.n_classes(P) == 19 == max(s for *_, s in expected) + 1
    for p in (2, 3, 7):
        assert len(symbol_add.table(p)[0]) == p * (p + 1) // 2 and symbol_add.n_classes(p) == 2 * p - 1


def test_sequences_use_the_modular_token_layout():
    tokens = symbol_add.sequences(P)
    i_N, j_N, _ = symbol_add.table(P)
    assert tokens.shape == (55, 4)
    np.testing.assert_array_equal(tokens[:, 0], i_N)
    np.testing.assert_array_equal(tokens[:, 2], j_N)
    # the operator and equals tokens are the same in every row, and are not symbols
    assert len(set(tokens[:, 1])) == 1 and len(set(tokens[:, 3])) == 1 and min(tokens[0, 1], tokens[0, 3]) >= P


def _brute_force_parallelograms(p: int) -> set[frozenset]:
    """Every unordered pair of distinct unordered pairs {(i, j), (m, n)} with i + j = m + n."""
    pairs = [(i, j) for i in range(p) for j in range(i, p)]
    return {frozenset((a, b)) for a, b in itertools.combinations(pairs, 2) if sum(a) == sum(b)}


@pytest.mark.parametrize("p", [2, 4, P])
def test_parallelogram_pairs_against_brute_force_and_the_rqi_module(p):
    i_N, j_N, _ = symbol_add.table(p)
    rows = symbol_add.parallelogram_pairs(p)
    assert rows.dtype == np.int32 and rows.shape[1] == 2 and np.all(rows[:, 0] < rows[:, 1])
    as_pairs = [frozenset(((i_N[r], j_N[r]), (i_N[s], j_N[s]))) for r, s in rows.tolist()]
    assert len(set(as_pairs)) == len(as_pairs)  # no parallelogram twice
    expected = _brute_force_parallelograms(p)
    assert set(as_pairs) == expected
    # the analysis module's (a, b, c, d) rows: the same parallelograms
    quads = parallelograms(p)
    assert {frozenset(((a, b), (c, d))) for a, b, c, d in quads.tolist()} == expected and len(quads) == len(expected)


def test_the_count_of_parallelograms_for_ten_symbols():
    # sum s has min(s, 2p-2-s)//2 + 1 unordered pairs; each sum contributes C(n_s, 2)
    counts = [min(s, 2 * P - 2 - s) // 2 + 1 for s in range(2 * P - 1)]
    assert sum(counts) == 55
    assert len(symbol_add.parallelogram_pairs(P)) == sum(n * (n - 1) // 2 for n in counts)


def test_a_perfect_one_dimensional_embedding_has_rqi_one():
    e = np.arange(P, dtype=np.float64)[:, None]
    assert rqi(e, parallelograms(P)) == 1.0
    assert rqi(3.0 * e - 7.0, parallelograms(P)) == 1.0  # invariant to scale and shift
