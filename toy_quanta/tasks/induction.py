"""Induction heads and the in-context learning phase change (Olsson et al. 2022): next-token
prediction on random sequences whose repeats are predictable only by looking back (data.induction)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toy_quanta import checks, registry
from toy_quanta.analysis import induction as scores
from toy_quanta.data import induction
from toy_quanta.engine.program import EvalContext, Program
from toy_quanta.errors import ConfigError
from toy_quanta.registry import register_task
from toy_quanta.tasks.base import Task

# A head counts as an induction head from the first log step its induction score reaches this
INDUCTION_LEVEL = 0.5


@dataclass
class InductionConfig:
    """Random blocks of block_min..block_max distinct tokens, repeated to fill seq_len positions, or
    random tokens with one such segment copied at a random offset (toy_quanta.data.induction);
    the loss is next-token cross-entropy at every position."""

    name: str = "induction"
    # periodic: a block repeated from position 0 (positions line up with the period); segment:
    # random tokens with one segment of block_min..block_max tokens copied further on (Olsson et al.'s)
    layout: str = "periodic"
    vocab: int = 128
    seq_len: int = 128  # the context: tokens per sequence (and the model's positions)
    block_min: int = 5  # each sequence's period L is uniform in [block_min, block_max]
    block_max: int = 10
    test_size: int = 256  # fixed evaluation sequences
    probe_size: int = 32  # sequences of each attention probe (the first test sequences; repeated random tokens)


class Data(NamedTuple):
    """A member's constants on the device."""

    test: jax.Array  # (N, S) int32 test sequences
    test_mask: jax.Array  # (N, S) bool: the position's next token is predictable by copying
    probe: jax.Array  # (probe_size, S) int32 repeated random tokens (prefix matching)


def token_losses(model: Any, tokens_BxS: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(loss_BxS, correct_BxS): next-token cross-entropy and accuracy at positions 0..S-2 (the S - 1
    positions that have a next token), from every position's logits in one forward pass."""
    logits_BxSxV = model.all_logits(tokens_BxS)[:, :-1]  # (B, S - 1, V), as every array here
    next_BxS = tokens_BxS[:, 1:]
    loss_BxS = optax.softmax_cross_entropy_with_integer_labels(logits_BxSxV, next_BxS)
    return loss_BxS, (jnp.argmax(logits_BxSxV, -1) == next_BxS).astype(jnp.float32)


def sequence_loss(model: Any, tokens_BxS: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(loss_B, correct_B): each sequence's mean next-token loss and token accuracy."""
    loss_BxS, correct_BxS = token_losses(model, tokens_BxS)
    return loss_BxS.mean(-1), correct_BxS.mean(-1)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


class Induction(Task):
    name = "induction"
    config = InductionConfig
    models = ("transformer",)
    after_run_name = "induction"  # what after_run adds to summary.json
    headline = ("test_loss", "repeated_loss", "icl_score", "induction_score_max", "phase_change_step")

    def validate(self, cfg: Any) -> None:
        checks.choice(cfg, "task.layout", tuple(induction.LAYOUTS))
        for key in ("task.vocab", "task.seq_len", "task.block_min", "task.block_max", "task.test_size",
                    "task.probe_size"):
            checks.positive_int(cfg, key)
        vocab, seq_len = checks.get(cfg, "task.vocab"), checks.get(cfg, "task.seq_len")
        lo, hi = checks.get(cfg, "task.block_min"), checks.get(cfg, "task.block_max")
        if vocab < 2:
            raise ConfigError("task.vocab", vocab, "an integer >= 2")
        if lo < 2:
            raise ConfigError("task.block_min", lo, "an integer >= 2 (a block of one token repeats the current token)")
        if hi < lo:
            raise ConfigError("task.block_max", hi, f"an integer >= task.block_min={lo}")
        if hi > vocab:
            raise ConfigError("task.block_max", hi, f"at most task.vocab={vocab} (a block's tokens are distinct)")
        if seq_len < hi + 2:
            raise ConfigError("task.seq_len", seq_len, f"an integer >= task.block_max + 2 = {hi + 2} (the second copy "
                                                       "of every block must reach a predicted position)")
        if checks.get(cfg, "task.layout") == "segment" and seq_len < 2 * hi:
            raise ConfigError("task.seq_len", seq_len, f"an integer >= 2 x task.block_max = {2 * hi} with "
                                                       "task.layout=segment (the segment and its copy both fit)")
        test_size, probe_size = checks.get(cfg, "task.test_size"), checks.get(cfg, "task.probe_size")
        if probe_size > test_size:
            raise ConfigError("task.probe_size", probe_size, f"at most task.test_size={test_size} (the induction "
                                                             "probe is the first test sequences)")

    def model_io(self, cfg: Any) -> dict[str, int]:
        t = cfg.task
        return {"vocab": t.vocab, "n_out": t.vocab, "seq_len": t.seq_len}

    def program(self, cfg: Any, members: Sequence[dict[str, Any]]) -> Program:
        t, batch_size = cfg.task, cfg.train.batch_size

        layout = induction.LAYOUTS[t.layout]
        n_layers, n_heads = cfg.model.n_layers, cfg.model.n_heads
        # row i zeroes head i (layer-major): one forward pass per head, each without that head
        ablate_TxLxH = 1.0 - jnp.eye(n_layers * n_heads).reshape(-1, n_layers, n_heads)

        def draw(key: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
            return layout(key, size, t.seq_len, t.vocab, t.block_min, t.block_max)

        def repeated_loss(model: Any, tokens_BxS: jax.Array, mask_BxS: jax.Array, head_mask: Any = None) -> jax.Array:
            logits_BxSxV = model.all_logits(tokens_BxS, head_mask)[:, :-1]
            loss_BxS = optax.softmax_cross_entropy_with_integer_labels(logits_BxSxV, tokens_BxS[:, 1:])
            return _masked_mean(loss_BxS, mask_BxS[:, :-1])

        def init(hyper, member_input, key) -> Data:
            test, test_mask = draw(jax.random.fold_in(key, 2), t.test_size)
            probe = induction.repeated_probe(jax.random.fold_in(key, 3), t.probe_size, t.seq_len, t.vocab)
            return Data(test=test, test_mask=test_mask, probe=probe)

        def batch(data: Data, hyper, key, step):
            return draw(key, batch_size)[0], None  # fresh sequences every step

        def evaluate(ctx: EvalContext, data: Data, hyper) -> dict[str, jax.Array]:
            loss_NxS, correct_NxS = ctx.blocked(lambda tokens: token_losses(ctx.model, tokens), data.test)
            mask_NxS = data.test_mask[:, :-1]  # the S - 1 positions with a next token
            test_loss, test_acc = loss_NxS.mean(), correct_NxS.mean()
            inputs, inputs_mask = data.test[: t.probe_size], data.test_mask[: t.probe_size]
            # both probes in one pass (one copy of the program: compile time)
            attn_Lx2BxHxSxS = ctx.model.attention_patterns(jnp.concatenate([inputs, data.probe]))
            attn_LxBxHxSxS, attn_probe = attn_Lx2BxHxSxS[:, : t.probe_size], attn_Lx2BxHxSxS[:, t.probe_size:]
            # each head zeroed in turn: how much the repeated part's loss rises without it
            ablated_T = jax.lax.map(lambda m: repeated_loss(ctx.model, inputs, inputs_mask, m), ablate_TxLxH)
            return {
                # online: fresh sequences every step, so the minibatches' mean since the last log
                # estimates the loss on the training stream (at step 0, the test set's)
                "train_loss": jnp.where(ctx.has_train, ctx.train_loss, test_loss),
                "train_acc": jnp.where(ctx.has_train, ctx.train_acc, test_acc),
                "test_loss": test_loss,
                "test_acc": test_acc,
                "repeated_loss": _masked_mean(loss_NxS, mask_NxS),
                "other_loss": _masked_mean(loss_NxS, ~mask_NxS),
                "icl_score": scores.icl_score(loss_NxS.mean(0)),
                # per head, layer-major (index = layer * n_heads + head)
                "induction_score": scores.induction_score(attn_LxBxHxSxS, inputs).reshape(-1),
                "prefix_matching_score": scores.prefix_matching_score(attn_probe, data.probe).reshape(-1),
                "previous_token_score": scores.previous_token_score(attn_LxBxHxSxS).reshape(-1),
                "duplicate_token_score": scores.duplicate_token_score(attn_LxBxHxSxS, inputs).reshape(-1),
                "ablation_loss_rise": ablated_T - repeated_loss(ctx.model, inputs, inputs_mask),
            }

        return Program(init=init, batch=batch, loss=sequence_loss, evaluate=evaluate, batch_rows=batch_size)

    def summarize(self, steps_L: np.ndarray, logs: dict[str, np.ndarray]) -> dict[str, Any]:
        induction_LxT = np.asarray(logs["induction_score"])
        best = int(np.argmax(induction_LxT[-1]))
        return {
            "induction_score_max": float(induction_LxT[-1, best]),
            "induction_head": best,  # layer * n_heads + head
            "previous_token_score_max": float(np.max(logs["previous_token_score"][-1])),
            "prefix_matching_score_max": float(np.max(logs["prefix_matching_score"][-1])),
            "duplicate_token_score_max": float(np.max(logs["duplicate_token_score"][-1])),
            "ablation_loss_rise_max": float(np.max(logs["ablation_loss_rise"][-1])),
            "phase_change_step": scores.phase_change_step(steps_L, logs["test_loss"]),
            "induction_step": scores.first_step_above(steps_L, induction_LxT.max(-1), INDUCTION_LEVEL),
        }

    def after_run(self, cfg: Any, result: Any, snapshots: Any, out_dir: Path) -> dict[str, Any]:
        """The rules, and the phase-change step over the members (its spread over seeds)."""
        steps_L = np.asarray(result.steps)
        loss_LxM, induction_LxMxT = result.log_array("test_loss"), result.log_array("induction_score")
        found = [scores.phase_change_step(steps_L, loss_LxM[:, i]) for i in range(loss_LxM.shape[1])]
        heads = [scores.first_step_above(steps_L, induction_LxMxT[:, i].max(-1), INDUCTION_LEVEL)
                 for i in range(loss_LxM.shape[1])]
        final = {name: result.log_array(name)[-1] for name in ("induction_score", "previous_token_score",
                                                                "duplicate_token_score", "ablation_loss_rise")}
        circuits = [scores.circuit(final["induction_score"][i], final["previous_token_score"][i],
                                   final["duplicate_token_score"][i], final["ablation_loss_rise"][i], cfg.model.n_heads)
                    for i in range(loss_LxM.shape[1])]
        return {"induction": {
            "chance_loss": math.log(cfg.task.vocab),
            "layout": cfg.task.layout,
            "circuit_rule": scores.CIRCUIT_RULE,
            "circuits": circuits,
            "canonical_circuit": f"{sum(c['canonical'] for c in circuits)}/{len(circuits)}",
            "phase_change_rule": scores.PHASE_RULE,
            "induction_step_rule": f"first log step at which some head's induction score reaches {INDUCTION_LEVEL:g}",
            "phase_change_steps": found,
            "induction_steps": heads,
            "phase_change_spread": _spread(found),
        }}

    def report_line(self, member: dict[str, Any]) -> str:
        f = member["final"]
        step = "none" if f.get("phase_change_step") is None else f"step {f['phase_change_step']}"
        return (f"test loss {f['test_loss']:.3f} (repeated part {f['repeated_loss']:.3f}, rest {f['other_loss']:.3f}), "
                f"ICL score {f['icl_score']:.3f}, best induction score {f['induction_score_max']:.2f} "
                f"(head {f['induction_head']}), phase change at {step}")

    def report_lines(self, summary: dict[str, Any]) -> list[str]:
        found = summary.get("induction")
        if not found:
            return []
        spread = found["phase_change_spread"]
        where = (f"median {spread['median']:g}, range {spread['min']:g} to {spread['max']:g}" if spread["found"]
                 else "in no member")
        lines = [f"phase change at steps {found['phase_change_steps']} ({where}); a head's induction score "
                 f"reached {INDUCTION_LEVEL:g} at {found['induction_steps']}"]
        for i, c in enumerate(found.get("circuits", [])):
            ind, prev = c["induction_head"], c["previous_token_head"]
            below = "" if prev is None else (f"; best previous-token head below it {prev['head']} (score "
                                             f"{prev['previous_token']:.2f}, ablation +{prev['ablation_rise']:.2f} nats)")
            lines.append(f"member {i}: induction head {ind['head']} (score {ind['induction']:.2f}, ablation "
                         f"+{ind['ablation_rise']:.2f} nats){below}; canonical circuit: {'yes' if c['canonical'] else 'no'}")
        return lines

    def figures(self, result: Any, cfg: Any, out_dir: Path, title: str) -> None:
        from toy_quanta.plots.induction import plot_induction

        plot_induction(result, out_dir / "curves.png", vocab=cfg.task.vocab, n_heads=cfg.model.n_heads, title=title)

    def reachable(self, cfg: Any, member: dict[str, Any] | None = None) -> dict[str, float]:
        """Next-token accuracy of a perfect copier: the predictable positions (data.induction's mask),
        plus chance (1 / vocab) on the rest, in expectation over the period or segment length."""
        t = cfg.task
        lengths = np.arange(t.block_min, t.block_max + 1)
        predictable = (t.seq_len - 1 - lengths) if t.layout == "periodic" else (lengths - 1)
        share = float(np.mean(predictable) / (t.seq_len - 1))
        accuracy = share + (1.0 - share) / t.vocab
        return {"train_acc": accuracy, "test_acc": accuracy}

    def describe(self, cfg: Any) -> str:
        t = cfg.task
        model = registry.model(cfg.model.name).describe(cfg.model)
        layout = (f"blocks of {t.block_min}-{t.block_max} repeated" if t.layout == "periodic" else
                  f"random tokens, a segment of {t.block_min}-{t.block_max} copied")
        return (f"vocab {t.vocab}, {t.seq_len} tokens, {layout}; {model}; "
                f"{cfg.optim.name} lr={cfg.optim.lr:g} wd={cfg.optim.weight_decay:g}, batch {cfg.train.batch_size}")


def _spread(steps: list[int | None]) -> dict[str, Any]:
    """Median, range and standard deviation of the members' steps that were found."""
    found = np.asarray([s for s in steps if s is not None], np.float64)
    if not len(found):
        return {"found": 0, "median": None, "min": None, "max": None, "std": None}
    return {"found": int(len(found)), "median": float(np.median(found)), "min": float(found.min()),
            "max": float(found.max()), "std": float(found.std(ddof=1)) if len(found) > 1 else 0.0}


register_task(Induction())
