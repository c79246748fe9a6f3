"""task=induction through the engine (toy_quanta.tasks.induction + engine/train.py): a few steps end to
end, its metrics recomputed from the model by NumPy (the losses over the repeated part and the
rest, the ICL score, the head scores), its checks, and (slow) the phase change itself."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from toy_quanta.analysis import induction as scores
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, TrainConfig, validate
from toy_quanta.engine.loop import make_trainer, trainer_inputs
from toy_quanta.engine.members import expand
from toy_quanta.errors import ConfigError
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.models.transformer import TransformerConfig
from toy_quanta.tasks.induction import InductionConfig

TASK = dict(vocab=16, seq_len=14, block_min=3, block_max=5, test_size=24, probe_size=8)
MODEL = dict(n_layers=2, d_model=16, n_heads=2, attn_only=True, layer_norm=True)


def _cfg(task=None, model=None, steps=4, seeds=2, lr=3e-3, batch_size=16, log_every=2) -> Config:
    return Config(task=InductionConfig(**{**TASK, **(task or {})}),
                  model=TransformerConfig(**{**MODEL, **(model or {})}),
                  optim=OptimConfig(name="adamw", lr=lr, weight_decay=1.0),
                  train=TrainConfig(steps=steps, batch_size=batch_size, log_every=log_every, progress=False),
                  ensemble=EnsembleConfig(seeds=seeds))


def _train(cfg: Config):
    """(trainer, final state, hyperparameters, logs (L, M, ...)) of the whole run, compiled once."""
    members = expand(cfg)
    trainer = make_trainer(cfg, members)
    hyper, inputs = trainer_inputs(cfg, trainer, members)
    state, logs = jax.jit(jax.vmap(trainer.train))(hyper, inputs)
    return trainer, state, hyper, jax.tree.map(lambda x: np.swapaxes(np.asarray(x), 0, 1), logs)


@pytest.fixture(scope="module")
def run():
    cfg = _cfg()
    validate(cfg)
    return cfg, *_train(cfg)


def test_the_metrics_exist_with_their_shapes(run):
    _, trainer, _, _, logs = run
    L, M, T = len(trainer.log_steps), 2, 2 * 2
    assert list(trainer.log_steps) == [0, 2, 4]
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "repeated_loss", "other_loss", "icl_score"):
        assert logs[name].shape == (L, M), name
        assert np.all(np.isfinite(logs[name])), name
    for name in ("induction_score", "prefix_matching_score", "previous_token_score"):
        assert logs[name].shape == (L, M, T), name
        assert np.all((logs[name] >= 0) & (logs[name] <= 1 + 1e-6)), name
    # an untrained model sits near chance, ln(vocab)
    assert abs(logs["test_loss"][0] - math.log(16)).max() < 0.5
    assert not np.array_equal(logs["test_loss"][:, 0], logs["test_loss"][:, 1])  # two seeds


def _numpy_metrics(logits: np.ndarray, attn: np.ndarray, attn_probe: np.ndarray, tokens: np.ndarray,
                   probe: np.ndarray) -> dict:
    """The evaluation written out from the model's outputs with NumPy: losses per position by a
    float64 log-softmax, the repeated part by a loop over each sequence's earlier occurrences, the
    head scores by loops over (sequence, query)."""
    logits = np.asarray(logits, np.float64)[:, :-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nxt = tokens[:, 1:]
    loss = -np.take_along_axis(logp, nxt[..., None], -1)[..., 0]
    repeated = np.zeros_like(loss, bool)
    for b, t in enumerate(tokens):
        for i in range(len(t) - 1):
            earlier = [j for j in range(i) if t[j] == t[i]]
            repeated[b, i] = bool(earlier) and t[earlier[-1] + 1] == t[i + 1]
    per_position = loss.mean(0)
    n = len(per_position) // 4

    def induction(a, t):  # attention on the keys after earlier occurrences, averaged over scored queries
        total, count = 0.0, 0
        for b in range(len(t)):
            for q in range(t.shape[1]):
                keys = [j + 1 for j in range(q) if t[b, j] == t[b, q]]
                if keys:
                    total, count = total + a[:, b, :, q][..., keys].sum(-1), count + 1
        return (total / count).reshape(-1)

    S = tokens.shape[1]
    return {"test_loss": loss.mean(), "test_acc": (logits.argmax(-1) == nxt).mean(),
            "repeated_loss": loss[repeated].mean(), "other_loss": loss[~repeated].mean(),
            "icl_score": per_position[-n:].mean() - per_position[:n].mean(),
            "induction_score": induction(attn, tokens[: len(probe)]),
            "prefix_matching_score": induction(attn_probe, probe),
            "previous_token_score": np.mean([attn[:, :, :, q, q - 1] for q in range(1, S)], (0, 2)).reshape(-1),
            "sequence_loss": loss.mean(1), "sequence_acc": (logits.argmax(-1) == nxt).mean(1)}


def test_the_logged_metrics_and_the_loss_equal_a_numpy_recomputation(run):
    """At the last log step, every metric of member 1 from its final parameters and test set (the
    member's constants as the engine makes them: Program.init at the member's root key); and
    Program.loss, each sequence's mean next-token loss and accuracy over positions 0..S-2."""
    cfg, trainer, state, hyper, logs = run
    member = jax.tree.map(lambda x: x[1], hyper)
    data = trainer.program.init(member, None, jax.random.key(member["seed"]))
    tokens, probe = np.asarray(data.test), np.asarray(data.probe)
    P = cfg.task.probe_size

    @jax.jit
    def outputs(params, tokens, probe):
        model = nnx.merge(trainer.graphdef, params)
        return (model.all_logits(tokens), model.attention_patterns(jnp.concatenate([tokens[:P], probe])),
                trainer.program.loss(model, tokens))

    logits, attn, (loss_B, correct_B) = outputs(jax.tree.map(lambda x: x[1], state.params), tokens, probe)
    attn = np.asarray(attn, np.float64)
    expected = _numpy_metrics(np.asarray(logits), attn[:, :P], attn[:, P:], tokens, probe)
    np.testing.assert_allclose(loss_B, expected.pop("sequence_loss"), rtol=1e-5)
    np.testing.assert_allclose(correct_B, expected.pop("sequence_acc"))
    for name, value in expected.items():
        np.testing.assert_allclose(logs[name][-1, 1], value, rtol=2e-4, atol=2e-5, err_msg=name)
    # the test set's mask is the repeated part the loop found (both parts are there)
    mask = np.asarray(data.test_mask)[:, :-1]
    assert mask.sum() > 0 and (~mask).sum() > 0


BAD = [
    ("task.vocab", 1, "an integer >= 2"),
    ("task.vocab", 4, "at most task.vocab=4"),  # block_max 5 distinct tokens from 4
    ("task.block_min", 1, ">= 2"),
    ("task.block_max", 2, ">= task.block_min=3"),
    ("task.seq_len", 6, "block_max + 2 = 7"),
    ("task.seq_len", 0, "integer >= 1"),
    ("task.test_size", 0, "integer >= 1"),
    ("task.probe_size", 30, "at most task.test_size=24"),
    ("task.block_min", 2.5, "integer >= 1"),
]


@pytest.mark.parametrize("key,value,allowed", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_keys_are_refused_naming_the_key(key, value, allowed):
    cfg = _cfg()
    setattr(cfg.task, key.split(".")[1], value)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    expected_key = "task.block_max" if (key, value) == ("task.vocab", 4) else key
    assert info.value.key == expected_key and allowed in str(info.value), str(info.value)


def test_the_model_must_be_the_transformer_and_attn_only_a_boolean():
    cfg = dataclasses.replace(_cfg(), model=EmbedMLPConfig())
    with pytest.raises(ConfigError, match="a model for task induction: one of transformer"):
        validate(cfg)
    cfg = _cfg(model={"attn_only": "yes"})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == "model.attn_only"


@pytest.mark.slow
def test_the_phase_change_happens():
    """experiment=induction's setting, shortened (2 seeds, lr 3e-3, 700 steps): the test loss starts
    near ln(128), then falls far below it; the phase-change step is found, no head is an induction
    head well before it, and some head's induction score passes 0.5 by the end."""
    cfg = _cfg(task=dict(vocab=128, seq_len=48, block_min=5, block_max=10, test_size=128, probe_size=16),
               model=dict(d_model=48, n_heads=4), steps=700, seeds=2, lr=3e-3, batch_size=32, log_every=25)
    validate(cfg)
    trainer, _, _, logs = _train(cfg)
    steps = trainer.log_steps
    for i in range(2):
        loss, best = logs["test_loss"][:, i], logs["induction_score"][:, i].max(-1)
        assert abs(loss[0] - math.log(128)) < 0.6 and loss[-1] < 1.2, loss
        step = scores.phase_change_step(steps, loss)
        assert step is not None and 100 <= step < 700, (step, loss)
        assert best[-1] > 0.5 and best[steps < step - 100].max() < 0.3, best


def test_the_experiment_composes_as_the_anchor_s_model(hydra_compose):
    from toy_quanta.job import to_config

    cfg = to_config(hydra_compose(["experiment=induction"]))
    validate(cfg)
    m, o = cfg.model, cfg.optim
    assert (cfg.task.name, cfg.task.vocab, m.name, m.n_layers, m.d_model, m.n_heads, m.attn_only) == (
        "induction", 128, "transformer", 2, 48, 4, True)
    assert (o.name, o.lr, o.weight_decay, cfg.ensemble.seeds) == ("adamw", 1e-3, 1.0, 5)


def test_duplicate_token_scores_and_head_ablations_equal_a_recomputation(run):
    """duplicate_token_score by a loop over (sequence, query); ablation_loss_rise by zeroing each
    head's rows of its layer's output projection in the parameters (the head's contribution to
    the residual stream) and recomputing the repeated part's loss on the probe sequences."""
    cfg, trainer, state, hyper, logs = run
    member = jax.tree.map(lambda x: x[1], hyper)
    data = trainer.program.init(member, None, jax.random.key(member["seed"]))
    P, H = cfg.task.probe_size, cfg.model.n_heads
    tokens, mask = np.asarray(data.test)[:P], np.asarray(data.test_mask)[:P, :-1]
    params = jax.tree.map(lambda x: x[1], state.params)
    E = cfg.model.d_model // H

    def repeated_loss(p) -> float:
        logits = np.asarray(nnx.merge(trainer.graphdef, p).all_logits(jnp.asarray(tokens)), np.float64)[:, :-1]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        loss = -np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
        return loss[mask].mean()

    full = repeated_loss(params)
    pure = nnx.to_pure_dict(params)
    rises = []
    for layer in range(cfg.model.n_layers):
        for head in range(H):
            zeroed = jax.tree.map(lambda x: x, pure)
            kernel = np.array(zeroed["blocks"][layer]["o"]["kernel"])
            kernel[head * E:(head + 1) * E] = 0.0
            zeroed["blocks"][layer]["o"]["kernel"] = jnp.asarray(kernel)
            p = jax.tree.map(lambda x: x, params)
            nnx.replace_by_pure_dict(p, zeroed)
            rises.append(repeated_loss(p) - full)
    np.testing.assert_allclose(logs["ablation_loss_rise"][-1, 1], rises, rtol=1e-3, atol=2e-5)

    attn = np.asarray(nnx.merge(trainer.graphdef, params).attention_patterns(jnp.asarray(tokens)), np.float64)
    total, count = 0.0, 0
    for b in range(P):
        for q in range(tokens.shape[1]):
            keys = [k for k in range(q) if tokens[b, k] == tokens[b, q]]
            if keys:
                total, count = total + attn[:, b, :, q][..., keys].sum(-1), count + 1
    np.testing.assert_allclose(logs["duplicate_token_score"][-1, 1], (total / count).reshape(-1), rtol=2e-4, atol=2e-5)


def test_the_segment_layout_trains_and_its_reachable_accuracy_is_its_predictable_share():
    from toy_quanta.tasks.induction import Induction

    cfg = _cfg(task={"layout": "segment", "seq_len": 16, "block_min": 3, "block_max": 6}, steps=2, seeds=1)
    validate(cfg)
    _, _, _, logs = _train(cfg)
    assert np.all(np.isfinite(logs["repeated_loss"]))
    reach = Induction().reachable(cfg)["test_acc"]
    share = np.mean([(length - 1) / 15 for length in range(3, 7)])
    assert reach == pytest.approx(share + (1 - share) / 16)
    periodic = Induction().reachable(_cfg())["train_acc"]
    assert periodic == pytest.approx(np.mean([(13 - L) / 13 for L in range(3, 6)]) * (1 - 1 / 16) + 1 / 16)
