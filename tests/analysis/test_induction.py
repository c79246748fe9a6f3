"""Head scores and the phase-change step (toy_quanta.analysis.induction) on planted attention
patterns and planted loss curves, against loops and values computed by hand."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from toy_quanta.analysis import induction as ind

ABCABC = np.array([[0, 1, 2, 0, 1, 2]])  # a b c a b c


def loop_targets(tokens_S: np.ndarray) -> np.ndarray:
    """(S, S): [q, k] where key k follows an earlier occurrence of token q, by a loop."""
    S = len(tokens_S)
    out = np.zeros((S, S), bool)
    for q in range(S):
        for j in range(q):
            if tokens_S[j] == tokens_S[q]:
                out[q, j + 1] = True
    return out


def planted(tokens_BxS: np.ndarray, key_of) -> np.ndarray:
    """(B, 1, S, S) one-hot attention: query q on key key_of(tokens_S, q)."""
    B, S = tokens_BxS.shape
    attn = np.zeros((B, 1, S, S))
    for b in range(B):
        for q in range(S):
            attn[b, 0, q, key_of(tokens_BxS[b], q)] = 1.0
    return attn


def after_latest_occurrence(tokens_S, q):
    earlier = [j for j in range(q) if tokens_S[j] == tokens_S[q]]
    return earlier[-1] + 1 if earlier else 0  # no earlier occurrence: the first token


def uniform(B: int, H: int, S: int) -> np.ndarray:
    return np.broadcast_to(np.tril(np.ones((S, S))) / np.arange(1, S + 1)[:, None], (B, H, S, S))


def periodic(rng, B, S, vocab, lo, hi) -> np.ndarray:
    rows = []
    for _ in range(B):
        period = rng.integers(lo, hi + 1)
        rows.append(np.resize(rng.choice(vocab, period, replace=False), S))
    return np.array(rows)


def test_targets_equal_a_loop_with_repeated_tokens():
    tokens = np.random.default_rng(0).integers(0, 4, (5, 12))  # small vocabulary: many repeats
    got = ind.induction_targets(tokens)
    for b in range(5):
        np.testing.assert_array_equal(got[b], loop_targets(tokens[b]))


def test_a_perfect_induction_head_scores_one():
    tokens = periodic(np.random.default_rng(1), 16, 20, 30, 3, 7)
    attn = planted(tokens, after_latest_occurrence)
    np.testing.assert_allclose(ind.induction_score(attn, tokens), [1.0])
    # attending to the token after the first occurrence instead is induction too
    first = planted(tokens, lambda t, q: ([j for j in range(q) if t[j] == t[q]] or [-1])[0] + 1)
    np.testing.assert_allclose(ind.induction_score(first, tokens), [1.0])
    # only query 1 (no earlier occurrence: on key 0) is on its previous token, 1 of the 19 scored
    assert ind.previous_token_score(attn)[0] == pytest.approx(1 / 19)


def test_a_previous_token_head_scores_one_there_and_zero_on_induction():
    tokens = periodic(np.random.default_rng(2), 16, 20, 30, 3, 7)  # period >= 3: q - 1 never follows an earlier q
    attn = planted(tokens, lambda t, q: max(q - 1, 0))
    np.testing.assert_allclose(ind.previous_token_score(attn), [1.0])
    np.testing.assert_allclose(ind.induction_score(attn, tokens), [0.0])


def test_uniform_attention_by_hand():
    attn = uniform(1, 2, 6)
    # a b c a b c: queries 3, 4, 5 have one target each (keys 1, 2, 3) among 4, 5, 6 keys
    np.testing.assert_allclose(ind.induction_score(attn, ABCABC), [37 / 180] * 2)
    # previous token: 1/2, 1/3, 1/4, 1/5, 1/6 at queries 1..5
    np.testing.assert_allclose(ind.previous_token_score(attn), [(1 / 2 + 1 / 3 + 1 / 4 + 1 / 5 + 1 / 6) / 5] * 2)
    assert ind.uniform_previous_token_score(6) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5 + 1 / 6) / 5)


def test_heads_and_layers_are_scored_apart_and_numpy_and_jax_agree():
    """(L, B, H, S, S) -> (L, H): layer 0 a previous-token and a uniform head, layer 1 an induction
    head and the previous-token head again."""
    tokens = periodic(np.random.default_rng(3), 8, 15, 20, 3, 6)
    prev = planted(tokens, lambda t, q: max(q - 1, 0))[:, 0]
    induct = planted(tokens, after_latest_occurrence)[:, 0]
    flat = uniform(8, 1, 15)[:, 0]
    attn = np.stack([np.stack([prev, flat], 1), np.stack([induct, prev], 1)])  # (2, 8, 2, 15, 15)
    score = ind.induction_score(attn, tokens)
    assert score.shape == (2, 2)
    assert score[1, 0] == pytest.approx(1.0) and score[0, 0] == 0.0 and score[1, 1] == 0.0 and 0 < score[0, 1] < 0.3
    previous = ind.previous_token_score(attn)
    assert previous[0, 0] == previous[1, 1] == pytest.approx(1.0)
    for fn, args in ((ind.induction_score, (attn, tokens)), (ind.previous_token_score, (attn,)),
                     (ind.prefix_matching_score, (attn, tokens))):
        on_device = fn(*(jnp.asarray(a, jnp.float32) if a.dtype.kind == "f" else jnp.asarray(a) for a in args))
        np.testing.assert_allclose(np.asarray(on_device), fn(*args), rtol=1e-6, atol=1e-7)


def test_no_query_with_an_earlier_occurrence_scores_zero():
    tokens = np.arange(6)[None]  # all distinct
    assert ind.induction_score(uniform(1, 1, 6), tokens)[0] == 0.0


def test_icl_score_is_late_minus_early_quarters():
    loss = np.array([4.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 0.5])
    assert ind.icl_positions(8) == (slice(0, 2), slice(6, 8))
    assert ind.icl_score(loss) == pytest.approx(0.75 - 4.0)
    assert ind.icl_score(np.ones(3)) == 0.0  # one position each, at least


def test_the_phase_change_step_on_planted_curves():
    steps = np.arange(0, 2001, 100)
    # a fast fall from 4.85 to a plateau at 2.5, then a drop from step 1200 to 0.5
    loss = np.where(steps < 100, 4.85, 2.5)
    loss = np.where(steps >= 1200, 0.5, loss).astype(float)
    loss[steps == 1100] = 2.0  # on the way down: above the midpoint 1.5
    assert ind.phase_change_step(steps, loss) == 1200
    # no drop after the plateau: none
    assert ind.phase_change_step(steps, np.where(steps < 100, 4.85, 2.5)) is None
    # a drop smaller than MIN_DROP: none
    assert ind.phase_change_step(steps, np.where(steps < 1000, 2.5, 2.5 - ind.MIN_DROP / 2)) is None
    assert ind.phase_change_step(steps, np.full(len(steps), np.nan)) is None


def test_first_step_above_and_head_names():
    steps = np.array([0, 50, 100, 150])
    assert ind.first_step_above(steps, [0.1, 0.2, 0.6, 0.9], 0.5) == 100
    assert ind.first_step_above(steps, [0.1, 0.2, 0.3, 0.4], 0.5) is None
    assert [ind.head_name(i, 4) for i in (0, 3, 4, 7)] == ["L0H0", "L0H3", "L1H0", "L1H3"]


def latest_occurrence(tokens_S, q):
    earlier = [j for j in range(q) if tokens_S[j] == tokens_S[q]]
    return earlier[-1] if earlier else 0


def test_a_duplicate_token_head_scores_one_and_an_induction_head_does_not():
    """A head attending from each token to its own previous occurrence scores 1 on duplicates and 0
    on induction (the key after the occurrence is the next position); an induction head the other
    way round; uniform attention scores (duplicates before q) / (q + 1), by a loop."""
    rng = np.random.default_rng(0)
    tokens = periodic(rng, 8, 24, 12, 3, 6)
    dup = planted(tokens, latest_occurrence)
    assert ind.duplicate_token_score(dup, tokens)[0] == pytest.approx(1.0)
    assert ind.induction_score(dup, tokens)[0] == pytest.approx(0.0)
    induction = planted(tokens, after_latest_occurrence)
    assert ind.duplicate_token_score(induction, tokens)[0] == pytest.approx(0.0)
    S = tokens.shape[1]
    want, n = 0.0, 0
    for tokens_S in tokens:
        for q in range(S):
            count = sum(tokens_S[k] == tokens_S[q] for k in range(q))
            if count:
                want, n = want + count / (q + 1), n + 1
    np.testing.assert_allclose(ind.duplicate_token_score(uniform(8, 1, S), tokens)[0], want / n)
    np.testing.assert_allclose(np.asarray(ind.duplicate_token_score(jnp.asarray(uniform(8, 1, S)), jnp.asarray(tokens))),
                               ind.duplicate_token_score(uniform(8, 1, S), tokens), rtol=1e-6)


def test_the_circuit_reads_the_scores_and_the_ablations():
    """Heads layer-major, 2 layers x 2 heads: the best induction head and the head below it whose
    zeroing costs most; canonical only when both pass their score and their zeroing costs >= NEEDED."""
    induction_T = [0.05, 0.04, 0.7, 0.2]
    previous_T = [0.1, 0.8, 0.02, 0.03]
    duplicate_T = [0.0, 0.0, 0.0, 0.0]
    rise_T = [0.0, 1.2, 2.5, 0.01]
    c = ind.circuit(induction_T, previous_T, duplicate_T, rise_T, n_heads=2)
    assert c["induction_head"]["head"] == "L1H0" and c["previous_token_head"]["head"] == "L0H1"
    assert c["canonical"] and c["needed"] == ["L0H1", "L1H0"]
    assert c["induction_heads"] == ["L1H0"] and c["previous_token_heads"] == ["L0H1"]
    # the previous-token head is not needed (its zeroing costs nothing): not the canonical circuit
    assert not ind.circuit(induction_T, previous_T, duplicate_T, [0.0, 0.05, 2.5, 0.0], 2)["canonical"]
    # the needed head below is no previous-token head (score 0.3): not canonical, and it is the one named
    c = ind.circuit(induction_T, [0.8, 0.3, 0.02, 0.03], duplicate_T, [0.05, 1.2, 2.5, 0.0], 2)
    assert c["previous_token_head"]["head"] == "L0H1" and not c["canonical"]
    # a previous-token head in the same layer as the induction head does not feed it
    c = ind.circuit([0.05, 0.04, 0.7, 0.2], [0.1, 0.1, 0.02, 0.9], duplicate_T, [0.0, 0.0, 2.5, 1.0], 2)
    assert c["previous_token_head"]["head"] in ("L0H0", "L0H1") and not c["canonical"]
    # an induction head in layer 0 has nothing below it
    assert ind.circuit([0.9, 0.0, 0.0, 0.0], previous_T, duplicate_T, rise_T, 2)["previous_token_head"] is None
