"""The effective theory's toy task, task=symbol_add (data/symbol_add.py), and its in-loop
representation metrics (engine/modular_train.py: rqi and eff_loss) against NumPy recomputations."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from flax import nnx

from toy_quanta.analysis.rqi import parallelograms, rqi
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.tasks.symbol_add import SymbolAddConfig
from toy_quanta.data import modular, symbol_add
from toy_quanta.engine.loop import make_trainer, trainer_inputs
from toy_quanta.engine.members import expand

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


# ------------------------------------------------------------------------------------------------
# The in-loop metrics of the modular trainer

FRACTIONS = (0.5, 0.82)


def _cfg(d_embed: int, steps: int = 6) -> Config:
    return Config(task=SymbolAddConfig(p=P, train_fraction=0.82, split_seed=3),
                  model=EmbedMLPConfig(d_embed=d_embed, width=8, depth=1, activation="tanh"),
                  optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=0.0, embed_lr=3e-2),
                  train=TrainConfig(steps=steps, log_every=3, progress=False),
                  ensemble=EnsembleConfig(train_fraction=list(FRACTIONS)))


def _numpy_metrics(embed_PxE: np.ndarray, fraction: float, split_seed: int) -> tuple[float, float]:
    """(RQI by the analysis module, effective loss by hand) of a raw embedding for a member whose
    training set is the pairs of split rank < round(fraction * 55)."""
    e = np.asarray(embed_PxE, np.float64)
    i_N, j_N, _ = symbol_add.table(P)
    train_N = modular.split_rank(len(i_N), split_seed) < modular.n_train(len(i_N), fraction)
    index = {(i, j): n for n, (i, j) in enumerate(zip(i_N.tolist(), j_N.tolist()))}
    eff = 0.0
    for a, b, c, d in parallelograms(P).tolist():
        if train_N[index[a, b]] and train_N[index[c, d]]:
            eff += np.sum((e[a] + e[b] - e[c] - e[d]) ** 2)
    return rqi(e, parallelograms(P)), eff / np.sum(e**2)


def _embeddings(params) -> np.ndarray:
    """(M, P, E) every member's embedding matrix."""
    return np.asarray(nnx.to_pure_dict(params)["embed"]["embedding"])


@pytest.fixture(scope="module")
def trained():
    """Two members (training fractions 0.5 and 0.82), 2-D embeddings, a few steps, run as the app's
    loop runs them (compiled init, then compiled chunks): (cfg, trainer, chunk, data, final state, logs)."""
    cfg = _cfg(d_embed=2)
    members = expand(cfg)
    cfg, trainer = make_trainer(cfg, members)
    hyper, ranks = trainer_inputs(cfg, trainer, members)
    chunk = jax.jit(jax.vmap(trainer.chunk, (0, 0, None)))
    state, data = jax.jit(jax.vmap(trainer.init))(hyper, ranks)
    logs = []
    for n in np.diff(trainer.log_steps, prepend=0):
        state, log = chunk(state, data, np.int32(n))
        logs.append(jax.device_get(log))
    logs = {k: np.stack([log[k] for log in logs], axis=1) for k in logs[0]}  # (M, L)
    return cfg, trainer, chunk, data, state, logs


def test_trained_metrics_equal_a_numpy_recomputation_from_the_final_embedding(trained):
    cfg, trainer, _, _, state, logs = trained
    assert list(trainer.log_steps) == [0, 3, 6]
    embeds = _embeddings(state.params)
    effs = []
    for m, fraction in enumerate(FRACTIONS):
        want_rqi, want_eff = _numpy_metrics(embeds[m], fraction, cfg.task.split_seed)
        assert float(logs["rqi"][m, -1]) == pytest.approx(want_rqi, abs=1e-6)
        assert float(logs["eff_loss"][m, -1]) == pytest.approx(want_eff, rel=1e-4)
        effs.append(want_eff)
    # more training pairs, more training parallelograms: the members' masks differ
    assert 0 < effs[0] != effs[1]
    # the embedding trained (embed_lr): the logged effective loss changed
    assert not np.allclose(logs["eff_loss"][:, 0], logs["eff_loss"][:, -1])


@pytest.mark.parametrize("noisy", [False, True])
def test_planted_embeddings_through_the_trainer(trained, noisy):
    """E_i = 0.01 (i, 2) (a 1-D line, offset): rqi 1 and effective loss 0. With E_3 moved to
    0.01 (3.5, 2), exactly the parallelograms that involve symbol 3 fail, as NumPy says: rqi
    strictly between 0 and 1 (the scale 0.01 puts every raw squared gap below the tolerance, so
    only RQI on the normalised embedding gets this right). Evaluated by a chunk of 0 steps."""
    cfg, _, chunk, data, state, _ = trained
    planted = np.stack([np.arange(P, dtype=np.float32), np.full(P, 2.0, np.float32)], axis=1)
    if noisy:
        planted[3, 0] = 3.5
    planted *= 0.01
    params = jax.tree.map(np.array, state.params)  # a copy: the fixture's state stays as it was
    pure = nnx.to_pure_dict(params)
    pure["embed"]["embedding"] = np.broadcast_to(planted, pure["embed"]["embedding"].shape).copy()
    nnx.replace_by_pure_dict(params, pure)
    _, logs = chunk(state._replace(params=params), data, np.int32(0))
    n_quads = len(parallelograms(P))
    for m, fraction in enumerate(FRACTIONS):
        want_rqi, want_eff = _numpy_metrics(planted, fraction, cfg.task.split_seed)
        if not noisy:
            assert want_rqi == 1.0 and want_eff == pytest.approx(0.0, abs=1e-10)
        else:
            with_3 = [q for q in parallelograms(P).tolist() if 3 in q]
            assert want_rqi == pytest.approx(1 - len(with_3) / n_quads) and 0 < want_rqi < 1
            assert want_eff > 0
        assert float(logs["rqi"][m]) == pytest.approx(want_rqi, abs=1e-6)
        assert float(logs["eff_loss"][m]) == pytest.approx(want_eff, rel=1e-5, abs=1e-7)
