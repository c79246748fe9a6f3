"""task=symbol_add through the engine (toy_quanta.tasks.symbol_add): its in-loop representation
metrics (rqi and eff_loss) against NumPy recomputations from the trained and from planted embeddings."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from toy_quanta.analysis.rqi import parallelograms, rqi
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig
from toy_quanta.data import modular, symbol_add
from toy_quanta.engine.loop import make_trainer, trainer_inputs
from toy_quanta.engine.members import expand
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.tasks.symbol_add import SymbolAddConfig

P = 10

FRACTIONS = (0.5, 0.82)


def _cfg(d_embed: int, steps: int = 6) -> Config:
    return Config(task=SymbolAddConfig(p=P, train_fraction=0.82, split_seed=3),
                  model=EmbedMLPConfig(d_embed=d_embed, width=8, depth=1, activation="tanh"),
                  optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=0.0, embed_lr=3e-2),
                  train=TrainConfig(steps=steps, log_every=3, progress=False),
                  ensemble=EnsembleConfig(lists={"train_fraction": list(FRACTIONS)}))


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
    trainer = make_trainer(cfg, members)
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
