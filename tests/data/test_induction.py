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


def find_copy(tokens_S: np.ndarray, mask_S: np.ndarray) -> tuple[int, int, int]:
    """(source start, copy start, length) of the segment layout, read off by a loop: the mask is
    the copy's positions but its last, so the copy is [d, d + L) with L = mask.sum() + 1; its
    source is an earlier window holding the same tokens."""
    d, length = int(np.argmax(mask_S)), int(mask_S.sum()) + 1
    window = tokens_S[d:d + length]
    sources = [s for s in range(0, d - length + 1) if np.array_equal(tokens_S[s:s + length], window)]
    assert sources, "no earlier window equals the copy"
    return sources[0], d, length


@pytest.mark.parametrize("seq_len,vocab,lo,hi", [(64, 128, 16, 32), (24, 50, 3, 6), (12, 7, 2, 6), (20, 9, 10, 10)])
def test_the_segment_layout_copies_one_segment_further_on(seq_len, vocab, lo, hi):
    """Olsson et al.'s layout: random tokens, one segment of lo..hi tokens copied at a random later
    offset; the mask is the copy's positions whose next token is the source's next one."""
    tokens, mask = jax.jit(induction.segment, static_argnums=(1, 2, 3, 4, 5))(jax.random.key(seq_len), 300, seq_len,
                                                                            vocab, lo, hi)
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    assert tokens.shape == mask.shape == (300, seq_len) and tokens.min() >= 0 and tokens.max() < vocab
    lengths, starts, offsets = [], [], []
    for tokens_S, mask_S in zip(tokens, mask):
        src, dst, length = find_copy(tokens_S, mask_S)
        assert lo <= length <= hi and dst >= src + length and dst + length <= seq_len
        assert np.flatnonzero(mask_S).tolist() == list(range(dst, dst + length - 1))  # contiguous, all but the last
        for i in np.flatnonzero(mask_S):  # the next token is the source's next token
            assert tokens_S[i + 1] == tokens_S[src + (i - dst) + 1]
        lengths.append(length), starts.append(dst), offsets.append(dst - src)
    assert set(lengths) == set(range(lo, hi + 1))
    if seq_len > 2 * hi + 2:  # room to move: the copy is not at a fixed position or distance
        assert len(set(starts)) > 3 and len(set(offsets)) > 3


def test_the_segment_layout_is_refused_when_the_copy_cannot_fit():
    from conftest import with_values
    from toy_quanta.config import validate
    from toy_quanta.errors import ConfigError
    from toy_quanta.job import to_config
    from toy_quanta import api

    cfg = to_config(api.compose("experiment=induction", "task.layout=segment", "task.seq_len=30", "task.block_max=16"))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == "task.seq_len" and "2 x task.block_max = 32" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate(with_values(cfg, task__layout="spiral"))
    assert info.value.key == "task.layout"
