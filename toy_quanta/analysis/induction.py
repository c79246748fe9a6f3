"""Induction heads (Olsson et al. 2022): head scores from attention patterns, the in-context
learning score, and the step of the phase change. Pure functions of NumPy or JAX arrays (the task
calls them on the device at every log step; the tests on planted patterns).

Attention arrays are (..., B, H, S, S): [..., b, h, q, k] is how much head h attends from query
position q to key position k. Each score is a mean over the batch and the scored queries, one
per head: (..., H).

- induction score: attention from a token to the tokens that followed its earlier occurrences
  (keys k with 1 <= k <= q and tokens[k - 1] == tokens[q]), summed over those keys and averaged
  over the queries that have an earlier occurrence. 1 for a perfect induction head; a head that
  attends uniformly scores (number of such keys) / (q + 1) at each query.
- prefix-matching score: the same measure on the standard probe (a random block repeated,
  data.induction.repeated_probe), where the scored queries are the second copy.
- previous-token score: attention from position q to q - 1, averaged over q >= 1.
- duplicate-token score: attention from a token to its own earlier occurrences (keys k < q with
  tokens[k] == tokens[q]), summed over them and averaged over the queries that have one.
- ablation: the rise in the loss on the predictable positions when one head's output is zeroed
  (the task computes it with the model; `circuit` reads the heads' scores and rises).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from toy_quanta.analysis.milestones import steps_to


def _xp(x: Any):
    """The array module of x: jax.numpy for a JAX array, else NumPy."""
    if type(x).__module__.startswith("jax"):
        import jax.numpy as jnp

        return jnp
    return np


def induction_targets(tokens_BxS: Any) -> Any:
    """(B, S, S) bool: [b, q, k] is True where key k follows an earlier occurrence of query q's
    token (1 <= k <= q and tokens[b, k - 1] == tokens[b, q])."""
    xp = _xp(tokens_BxS)
    B, S = tokens_BxS.shape
    # prev_BxS[b, k] = tokens[b, k - 1], and a value no token has at k = 0
    prev_BxS = xp.concatenate([xp.full((B, 1), -1, tokens_BxS.dtype), tokens_BxS[:, :-1]], axis=1)
    k_le_q_SxS = np.arange(S)[None, :] <= np.arange(S)[:, None]
    return (prev_BxS[:, None, :] == tokens_BxS[:, :, None]) & k_le_q_SxS


def attention_to(attn_BxHxSxS: Any, target_BxSxS: Any) -> Any:
    """(..., H): the attention on the target keys, summed over them and averaged over the batch
    and the queries with at least one target (0 if no query has one)."""
    xp = _xp(attn_BxHxSxS)
    target = target_BxSxS[:, None]  # (B, 1, S, S), broadcast over heads
    on_target_BxHxS = (attn_BxHxSxS * target).sum(-1)
    scored_Bx1xS = target.any(-1)
    n = xp.maximum(scored_Bx1xS.sum(), 1)
    return (on_target_BxHxS * scored_Bx1xS).sum((-3, -1)) / n


def induction_score(attn_BxHxSxS: Any, tokens_BxS: Any) -> Any:
    """(..., H): attention to the tokens after the query token's earlier occurrences."""
    return attention_to(attn_BxHxSxS, induction_targets(tokens_BxS))


def prefix_matching_score(attn_BxHxSxS: Any, probe_BxS: Any) -> Any:
    """(..., H): the induction score on repeated random tokens (data.induction.repeated_probe)."""
    return induction_score(attn_BxHxSxS, probe_BxS)


def duplicate_targets(tokens_BxS: Any) -> Any:
    """(B, S, S) bool: [b, q, k] is True where key k < q holds the query's token."""
    S = tokens_BxS.shape[1]
    k_lt_q_SxS = np.arange(S)[None, :] < np.arange(S)[:, None]
    return (tokens_BxS[:, None, :] == tokens_BxS[:, :, None]) & k_lt_q_SxS


def duplicate_token_score(attn_BxHxSxS: Any, tokens_BxS: Any) -> Any:
    """(..., H): attention to the query token's own earlier occurrences."""
    return attention_to(attn_BxHxSxS, duplicate_targets(tokens_BxS))


def previous_token_score(attn_BxHxSxS: Any) -> Any:
    """(..., H): attention from each position q >= 1 to q - 1, averaged over q and the batch."""
    S = attn_BxHxSxS.shape[-1]
    on_prev_BxHxS = (attn_BxHxSxS * np.eye(S, k=-1)).sum(-1)[..., 1:]
    return on_prev_BxHxS.mean((-3, -1))


def icl_positions(n_positions: int) -> tuple[slice, slice]:
    """(early, late): the first and the last quarter of the predicted positions (at least one)."""
    n = max(1, n_positions // 4)
    return slice(0, n), slice(n_positions - n, n_positions)


def icl_score(loss_S: Any) -> Any:
    """In-context learning score (Olsson et al.'s, loss late in the context minus early), from the
    mean loss at each predicted position: the mean over the last quarter of them minus the mean
    over the first quarter. Negative when later tokens are predicted better."""
    early, late = icl_positions(loss_S.shape[-1])
    return loss_S[..., late].mean(-1) - loss_S[..., early].mean(-1)


# The phase change: the first log step at which the test loss falls below the midpoint of its
# plateau before the drop and its final value. The plateau is the highest test loss from
# PLATEAU_FROM of the run on (the steps before it are the fast first fall from ln(vocab) to the
# loss of copying any token of the context); no step when the loss fell by less than MIN_DROP nats
# from the plateau.
PLATEAU_FROM = 0.1
MIN_DROP = 0.5
PHASE_RULE = ("first log step whose test loss is below the midpoint of the plateau (the highest test loss "
              f"from {PLATEAU_FROM:.0%} of the steps on) and the final test loss; none if it fell by less "
              f"than {MIN_DROP:g} nats")


def phase_change_step(steps_L: Sequence[int], loss_L: Sequence[float]) -> int | None:
    """The step of the phase change by PHASE_RULE, or None."""
    steps_L, loss_L = np.asarray(steps_L), np.asarray(loss_L, np.float64)
    if len(loss_L) < 2 or not np.all(np.isfinite(loss_L)):
        return None
    start = int(np.searchsorted(steps_L, steps_L[0] + PLATEAU_FROM * (steps_L[-1] - steps_L[0])))
    plateau = int(start + np.argmax(loss_L[start:]))
    final = loss_L[-1]
    if loss_L[plateau] - final < MIN_DROP:
        return None
    below = np.flatnonzero(loss_L[plateau:] < (loss_L[plateau] + final) / 2)
    return int(steps_L[plateau + below[0]])


def first_step_above(steps_L: Sequence[int], score_L: Sequence[float], level: float) -> int | None:
    """The first log step at which score reaches level, or None."""
    at = steps_to(np.asarray(score_L, np.float64)[:, None], np.asarray(steps_L), level)[0]
    return None if np.isnan(at) else int(at)


def head_name(index: int, n_heads: int) -> str:
    """'L1H2': layer and head of a flat head index (layer-major, as the task logs them)."""
    return f"L{index // n_heads}H{index % n_heads}"


# The canonical circuit (Olsson et al.): an induction head fed by a previous-token head in a layer
# below, each of which the repeated part's loss needs. A head "is" one kind when its score reaches
# SCORE_LEVEL; the model "needs" a head when zeroing it raises that loss by at least NEEDED nats.
# The head below that the circuit needs most is the one whose zeroing costs most.
SCORE_LEVEL = 0.5
NEEDED = 0.1
CIRCUIT_RULE = (f"an induction head (induction score >= {SCORE_LEVEL:g}) whose zeroing raises the repeated part's loss "
                f"by >= {NEEDED:g} nats, and below it the head whose zeroing raises it most: needed too, and a "
                f"previous-token head (previous-token score >= {SCORE_LEVEL:g})")


def circuit(induction_T: Any, previous_T: Any, duplicate_T: Any, rise_T: Any, n_heads: int) -> dict[str, Any]:
    """Which heads do what at one log step (heads layer-major): the best induction head and the
    head below it whose zeroing costs most, each with its scores and that cost; whether they form
    the canonical circuit (CIRCUIT_RULE); the heads each score or cost picks out."""
    induction_T, previous_T, duplicate_T, rise_T = (np.asarray(x, np.float64) for x in
                                                    (induction_T, previous_T, duplicate_T, rise_T))
    layer_T = np.arange(len(induction_T)) // n_heads

    def head(i: int) -> dict[str, Any]:
        return {"head": head_name(i, n_heads), "induction": float(induction_T[i]), "previous_token": float(previous_T[i]),
                "duplicate_token": float(duplicate_T[i]), "ablation_rise": float(rise_T[i])}

    ind = int(np.argmax(induction_T))
    below = np.flatnonzero(layer_T < layer_T[ind])
    feeder = int(below[np.argmax(rise_T[below])]) if len(below) else None
    canonical = bool(induction_T[ind] >= SCORE_LEVEL and rise_T[ind] >= NEEDED and feeder is not None
                     and previous_T[feeder] >= SCORE_LEVEL and rise_T[feeder] >= NEEDED)
    return {"induction_head": head(ind), "previous_token_head": None if feeder is None else head(feeder),
            "canonical": canonical, "needed": [head_name(i, n_heads) for i in np.flatnonzero(rise_T >= NEEDED)],
            "induction_heads": [head_name(i, n_heads) for i in np.flatnonzero(induction_T >= SCORE_LEVEL)],
            "previous_token_heads": [head_name(i, n_heads) for i in np.flatnonzero(previous_T >= SCORE_LEVEL)]}


def uniform_previous_token_score(seq_len: int) -> float:
    """A head that attends uniformly to the positions at or before its own: mean of 1/(q + 1)."""
    return float(np.mean([1.0 / (q + 1) for q in range(1, seq_len)]))

