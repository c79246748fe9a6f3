"""The induction task's sequences (toy_quanta.data.induction) against plain NumPy loops over samples:
the mask marks exactly the positions whose next token is the token after the previous occurrence
of the current one, every sequence is a block of distinct tokens repeated, and the probe is a
random block repeated twice."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from toy_quanta.data import induction


def predictable_by_copying(tokens_S: np.ndarray) -> np.ndarray:
    """(S,) bool, by a loop: position i has an earlier occurrence j of its token (the latest one),
    and the token after j equals the token after i. The last position has no next token."""
    S = len(tokens_S)
    out = np.zeros(S, bool)
    for i in range(S - 1):
        earlier = [j for j in range(i) if tokens_S[j] == tokens_S[i]]
        if earlier:
            out[i] = tokens_S[earlier[-1] + 1] == tokens_S[i + 1]
    return out


def period_of(tokens_S: np.ndarray) -> int:
    """The smallest p with tokens[i] == tokens[i - p] for every i >= p."""
    S = len(tokens_S)
    return next(p for p in range(1, S + 1) if all(tokens_S[i] == tokens_S[i - p] for i in range(p, S)))


@pytest.mark.parametrize("seq_len,vocab,lo,hi", [(24, 16, 3, 8), (12, 5, 2, 5), (40, 128, 4, 12), (10, 8, 4, 4)])
def test_the_mask_is_exactly_the_positions_predictable_by_copying(seq_len, vocab, lo, hi):
    tokens, mask = jax.jit(induction.periodic, static_argnums=(1, 2, 3, 4, 5))(jax.random.key(seq_len), 200, seq_len,
                                                                             vocab, lo, hi)
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    assert tokens.shape == mask.shape == (200, seq_len) and tokens.dtype == np.int32 and mask.dtype == bool
    assert tokens.min() >= 0 and tokens.max() < vocab
    periods = []
    for tokens_S, mask_S in zip(tokens, mask):
        np.testing.assert_array_equal(mask_S, predictable_by_copying(tokens_S))
        p = period_of(tokens_S)
        periods.append(p)
        assert len(set(tokens_S[:p].tolist())) == p  # the block's tokens are distinct
        assert mask_S.sum() == seq_len - 1 - p  # every position from the second copy on, but the last
    # every period in [lo, hi] occurs, and no other
    assert set(periods) == set(range(lo, hi + 1))


def test_tokens_are_uniform_over_the_vocabulary():
    tokens, _ = induction.periodic(jax.random.key(0), 4000, 16, 32, 3, 6)
    first = np.asarray(tokens)[:, 0]  # each sequence's first token: one uniform draw
    counts = np.bincount(first, minlength=32)
    expected = len(first) / 32
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 70, chi2  # 31 degrees of freedom: the 99.99th percentile is about 66


def test_a_key_draws_its_own_sequences_and_the_same_key_the_same():
    a = np.asarray(induction.periodic(jax.random.key(1), 8, 20, 50, 3, 9)[0])
    b = np.asarray(induction.periodic(jax.random.key(1), 8, 20, 50, 3, 9)[0])
    c = np.asarray(induction.periodic(jax.random.key(2), 8, 20, 50, 3, 9)[0])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seq_len,vocab", [(16, 128), (17, 128), (40, 10)])
def test_the_probe_repeats_a_random_block(seq_len, vocab):
    probe = np.asarray(induction.repeated_probe(jax.random.key(3), 6, seq_len, vocab))
    period = min(seq_len // 2, vocab)
    assert induction.probe_period(seq_len, vocab) == period
    for tokens_S in probe:
        assert len(set(tokens_S[:period].tolist())) == period
        np.testing.assert_array_equal(tokens_S[period:], np.resize(tokens_S[:period], seq_len - period))
    assert len({tuple(t) for t in probe.tolist()}) == 6  # each row its own block
