"""Property-based tests (hypothesis) over the config space: every config is either rejected by
`toy_quanta.config.validate` with a ConfigError that names the key that is wrong, before anything
is traced or compiled, or it trains a few steps through `engine.loop.fit(cfg, expand(cfg))` and
logs every metric at every log step for every member. Never an exception from inside JAX, Flax,
Optax or NumPy.

Configs are drawn for every registered task with every model it allows, over the keys a user sets
on the command line (the knobs: CORE, TASK_KNOBS, MODEL_KNOBS): each knob draws values that are
allowed (tiny ones, so a run takes well under a second once compiled) and lists values that are
not, whatever the other keys are: zero, negative, beyond int32, NaN, inf, an int beyond the float
range, floats where integers go, strings, None, empty lists, scalars where lists go, lists of
another task.

Compiling is the cost of a run (seconds on 2 CPU cores), so the property that trains draws few
examples per task and model; the property that only validates draws many.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax.monitoring
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from toy_quanta.checks import ensemble_list
from toy_quanta import registry
from toy_quanta.config import (ENGINE_KEYS, GRAD_FILTERS, OPTIMIZERS, SCHEDULES, Config, EnsembleConfig, OptimConfig, TrainConfig,
                               validate)
from toy_quanta.data.modular import OPS
from toy_quanta.engine.loop import fit
from toy_quanta.engine.members import expand
from toy_quanta.errors import ConfigError
from toy_quanta.models.embed_mlp import COMBINES
from toy_quanta.models.mlp import ACTIVATIONS
from toy_quanta.models.transformer import POSITIONS
from toy_quanta.engine import losses
from toy_quanta.tasks.mnist import LOSSES
from toy_quanta.tasks.sparse_parity import LOSSES as PARITY_LOSSES
from toy_quanta.data.sparse_parity import ENCODINGS, SUBSETS
from toy_quanta.data.induction import LAYOUTS
from toy_quanta.tasks.teacher_student import TEACHER_ACTIVATIONS

NAN, INF = float("nan"), float("inf")
HUGE_INT = 10**400  # an int beyond the float range: math.isfinite and float32 overflow on it
INT32_END = 2**31

# Values that no key of the kind allows, whatever the rest of the config says.
BAD_POS_INT = [0, -1, -INT32_END, INT32_END, 2**63, 1.5, 2.0, NAN, INF, "2", True, False, None, [2]]
BAD_NONNEG_INT = [-1, -INT32_END, INT32_END, 2**64, 0.5, 1.0, NAN, "0", True, None, [0]]
BAD_POS = [0, 0.0, -1e-3, -1, NAN, INF, -INF, HUGE_INT, -HUGE_INT, "1e-3", True, None, [0.1]]
BAD_NONNEG = [-1e-9, -1, NAN, INF, -INF, HUGE_INT, "0", True, None, [0.0]]
BAD_UNIT = [1, 1.0, 1.5, -0.1, NAN, INF, HUGE_INT, "0.9", True, None]  # [0, 1)


def no_none(values: list) -> list:
    return [v for v in values if v is not None]


def bad_choice(allowed) -> list:
    first = list(allowed)[0]
    return ["nope", "", first.upper(), f" {first}", 3, True, None, [first], {first: 1}]


def bad_list(good: Any, bad_entries: list) -> list:
    """Values not allowed for an ensemble list whose entries may be `good` but not `bad_entries`:
    an empty list, a bad entry (alone or after a good one), a scalar, a string, a mapping."""
    return [[], *([b] for b in bad_entries), *([good, b] for b in bad_entries[:3]), good, str(good), {"x": good}]


BAD_POS_ENTRIES = [0, 0.0, -1.0, NAN, INF, HUGE_INT, "0.1", True, None]
BAD_NONNEG_ENTRIES = [-1e-9, -1, NAN, INF, -INF, HUGE_INT, "0", True, None]


class Knob(NamedTuple):
    """A key a user sets: `tiny`, an allowed value; `valid(values)`, a strategy of allowed values
    given the values drawn before it (knobs draw in order); `bad(values)`, values not allowed
    given them. An ensemble list (`is_list`) is null unless the draw picks it."""

    key: str
    tiny: Any
    valid: Callable[[dict], st.SearchStrategy]
    bad: Callable[[dict], list]
    is_list: bool = False


def ints(lo: int, hi: int) -> Callable[[dict], st.SearchStrategy]:
    return lambda v: st.integers(lo, hi)


def floats(lo: float, hi: float) -> Callable[[dict], st.SearchStrategy]:
    return lambda v: st.floats(lo, hi)


def one_of(*values) -> Callable[[dict], st.SearchStrategy]:
    return lambda v: st.sampled_from(list(values))


def either(*fns: Callable[[dict], st.SearchStrategy]) -> Callable[[dict], st.SearchStrategy]:
    return lambda v: st.one_of(*(fn(v) for fn in fns))


def mostly(usual: Callable[[dict], st.SearchStrategy], *rare) -> Callable[[dict], st.SearchStrategy]:
    """`usual`, or one of the `rare` values (edges: 1e30, 2^31 - 1) a quarter of the time."""
    return lambda v: st.one_of(usual(v), usual(v), usual(v), st.sampled_from(list(rare)))


def optional(fn: Callable[[dict], st.SearchStrategy]) -> Callable[[dict], st.SearchStrategy]:
    return lambda v: st.none() | fn(v)


def listing(fn: Callable[[dict], st.SearchStrategy]) -> Callable[[dict], st.SearchStrategy]:
    return lambda v: st.lists(fn(v), min_size=1, max_size=2)


def const(values: list) -> Callable[[dict], list]:
    return lambda v: values


def knob(key, tiny, valid, bad, is_list=False) -> Knob:
    return Knob(key, tiny, valid, bad if callable(bad) else const(bad), is_list)


def pos_int(key, tiny, lo, hi, optional_=False) -> Knob:
    return knob(key, tiny, optional(ints(lo, hi)) if optional_ else ints(lo, hi),
                no_none(BAD_POS_INT) if optional_ else BAD_POS_INT)


def nonneg_int(key, tiny, lo, hi) -> Knob:
    return knob(key, tiny, ints(lo, hi), BAD_NONNEG_INT)


def choice(key, allowed) -> Knob:
    return knob(key, list(allowed)[0], one_of(*allowed), bad_choice(allowed))


def flag(key) -> Knob:
    return knob(key, False, lambda v: st.booleans(), [])  # booleans are not checked: nothing to corrupt


# --- the engine's keys: every task has them ---------------------------------------------------------

CORE = [
    pos_int("train.steps", 2, 1, 4),
    pos_int("train.batch_size", 4, 1, 8),
    pos_int("train.log_every", 1, 1, 5),
    pos_int("train.log_count", None, 1, 4, optional_=True),
    pos_int("train.microbatch", None, 1, 8, optional_=True),
    knob("train.eval_batch_size", 8192, either(ints(1, 64), one_of(8192)), BAD_POS_INT),
    choice("optim.name", OPTIMIZERS),
    knob("optim.lr", 1e-2, mostly(floats(1e-4, 1.0), 1, 1e30), BAD_POS),
    knob("optim.weight_decay", 0.0, either(one_of(0.0, 0), floats(0.0, 10.0)), BAD_NONNEG),
    knob("optim.b1", 0.9, either(one_of(0.0), floats(0.0, 0.999)), BAD_UNIT),
    knob("optim.b2", 0.999, either(one_of(0.0), floats(0.0, 0.999)), BAD_UNIT),
    knob("optim.momentum", 0.0, either(one_of(0.0), floats(0.0, 0.99)), BAD_UNIT),
    knob("optim.eps", 1e-8, floats(1e-12, 1e-3), BAD_POS),
    knob("optim.warmup_steps", 0, mostly(ints(0, 5), INT32_END - 1), BAD_NONNEG_INT),
    choice("optim.schedule", SCHEDULES),
    knob("optim.final_lr_factor", 0.0, floats(0.0, 2.0), BAD_NONNEG),
    knob("optim.grad_clip", None, optional(floats(1e-3, 1e3)), no_none(BAD_POS)),
    knob("optim.fixed_norm", None, optional(floats(0.1, 100.0)), no_none(BAD_POS)),
    knob("model.init_scale", 1.0, mostly(floats(0.1, 10.0), 1e-3, 1e30), BAD_POS),
    pos_int("ensemble.seeds", 1, 1, 2),
    knob("seed", 0, lambda v: st.integers(0, INT32_END - 1 - v["ensemble.seeds"]),
         lambda v: [-1, INT32_END, INT32_END - v["ensemble.seeds"], 1.5, NAN, "0", True, None]),
    knob("ensemble.lr", None, listing(floats(1e-4, 1.0)), bad_list(1e-3, BAD_POS_ENTRIES), is_list=True),
    knob("ensemble.weight_decay", None, listing(floats(0.0, 10.0)), bad_list(0.0, BAD_NONNEG_ENTRIES), is_list=True),
    knob("ensemble.init_scale", None, listing(floats(0.1, 10.0)), bad_list(1.0, BAD_POS_ENTRIES), is_list=True),
    knob("ensemble.fixed_norm", None, listing(floats(0.1, 100.0)), bad_list(1.0, BAD_POS_ENTRIES), is_list=True),
    choice("optim.grokfast", GRAD_FILTERS),
    knob("optim.grokfast_alpha", 0.98, either(one_of(0.0), floats(0.0, 0.99)), BAD_UNIT),
    knob("optim.grokfast_lambda", 2.0, floats(0.0, 5.0), BAD_NONNEG),
    pos_int("optim.grokfast_window", 3, 1, 4),
    flag("optim.grokfast_warmup"),
    flag("optim.orthogonal"),
    knob("ensemble.grokfast", None, listing(one_of(*GRAD_FILTERS)), bad_list("ema", ["emma", 1, True, None]),
         is_list=True),
    knob("ensemble.grokfast_alpha", None, listing(floats(0.0, 0.99)), bad_list(0.9, [1.0, 1.5, -0.1, NAN, "0.9", None]),
         is_list=True),
    knob("ensemble.grokfast_lambda", None, listing(floats(0.0, 5.0)), bad_list(2.0, BAD_NONNEG_ENTRIES), is_list=True),
    knob("ensemble.eps", None, listing(floats(1e-12, 1e-3)), bad_list(1e-8, BAD_POS_ENTRIES), is_list=True),
    knob("ensemble.output_scale", None, listing(floats(0.1, 10.0)), bad_list(1.0, BAD_POS_ENTRIES), is_list=True),
]

# every built-in model's output scale and centring (engine/scaled.py)
SCALE_KNOBS = [knob("model.output_scale", 1.0, mostly(floats(0.1, 10.0), 1e3), BAD_POS), flag("model.centred")]


def embed_knobs(model_name: str) -> list[Knob]:
    """optim.embed_lr and embed_weight_decay: for a model with an embedding, null or a rate; for
    one without, only null."""
    if registry.model(model_name).embedding:
        return [knob("optim.embed_lr", None, optional(floats(1e-4, 1.0)), no_none(BAD_POS)),
                knob("optim.embed_weight_decay", None, optional(floats(0.0, 10.0)), no_none(BAD_NONNEG))]
    return [knob("optim.embed_lr", None, one_of(None), [1e-3, *no_none(BAD_POS)]),
            knob("optim.embed_weight_decay", None, one_of(None), [0.0, 0.1, *no_none(BAD_NONNEG)])]


# --- each task's keys (every field of its config but `name`: test_every_config_key_has_a_knob) --------

PRIMES = [2, 3, 5, 7, 11]


def _p_modular(v: dict) -> st.SearchStrategy:
    return st.sampled_from(PRIMES) if OPS[v["task.op"]].needs_prime else st.integers(2, 11)


def _bad_p_modular(v: dict) -> list:
    return [0, 1, -5, 4097, INT32_END, 5.0, "5", True, None, NAN] + ([4, 9] if OPS[v["task.op"]].needs_prime else [])


def _n_pairs(p: int) -> int:
    return p * (p + 1) // 2


def _fraction_symbol_add(v: dict) -> st.SearchStrategy:
    """A fraction f with 1 <= round(f * N) < N, N the pairs of task.p symbols."""
    n = _n_pairs(v["task.p"])
    return st.integers(1, n - 1).flatmap(lambda k: st.floats((k - 0.4) / n, (k + 0.4) / n))


def _bad_fraction_symbol_add(v: dict) -> list:
    n = _n_pairs(v["task.p"])  # round(0.2) = 0 pairs train; round(N - 0.2) = N: none validates
    return [0, 0.0, 1, 1.0, 1.5, -0.1, NAN, INF, HUGE_INT, "0.5", True, None, 0.2 / n, (n - 0.2) / n]


def _disjoint_fits(v: dict) -> bool:
    return v["task.n_tasks"] * v["task.k"] <= v["task.n"]


def _segment_fits(v: dict) -> bool:
    return v["task.seq_len"] >= 2 * v["task.block_max"]


BAD_FRACTIONS = [0, 0.0, 1, 1.0, 1.5, -0.1, NAN, INF, HUGE_INT, "0.5", True, None]

TASK_KNOBS: dict[str, list[Knob]] = {
    "sparse_parity": [
        pos_int("task.n", 6, 1, 8),
        knob("task.k", 2, lambda v: st.integers(1, v["task.n"]), lambda v: BAD_POS_INT + [v["task.n"] + 1]),
        knob("task.n_tasks", 4, lambda v: st.integers(1, min(math.comb(v["task.n"], v["task.k"]), 6)),
             lambda v: BAD_POS_INT + [math.comb(v["task.n"], v["task.k"]) + 1]),
        knob("task.alpha", 0.4, mostly(floats(0.0, 3.0), 0, 1e6), BAD_NONNEG),
        pos_int("task.D", None, 1, 40, optional_=True),
        pos_int("task.test_size", 32, 1, 32),
        pos_int("task.per_task_test", 4, 1, 4),
        knob("task.subset_seed", None, optional(ints(0, 2**40)), [-1, 1.5, NAN, "0", True]),
        choice("task.loss", PARITY_LOSSES),
        knob("task.target_scale", 1.0, floats(0.1, 10.0), BAD_POS),
        flag("task.progress"),
        # disjoint subsets need n_tasks * k <= n bits; otherwise only distinct ones validate
        knob("task.subsets", "distinct",
             lambda v: st.sampled_from(["distinct"] + (["disjoint"] if _disjoint_fits(v) else [])),
             lambda v: bad_choice(SUBSETS) + ([] if _disjoint_fits(v) else ["disjoint"])),
        choice("task.encoding", ENCODINGS),
        knob("ensemble.alpha", None, listing(floats(0.0, 3.0)), bad_list(0.4, BAD_NONNEG_ENTRIES), is_list=True),
        knob("ensemble.D", None, listing(ints(1, 40)),
             bad_list(10, [0, -1, 1.5, 10.0, INT32_END, NAN, "3", True, None]), is_list=True),
    ],
    "modular": [
        choice("task.op", OPS),
        knob("task.p", 5, _p_modular, _bad_p_modular),
        knob("task.train_fraction", 0.5, floats(0.01, 0.99), BAD_FRACTIONS),
        nonneg_int("task.split_seed", 0, 0, INT32_END - 1),
        flag("task.full_batch"),
        choice("task.loss", losses.LOSSES),
        choice("task.loss_dtype", losses.DTYPES),
        knob("ensemble.train_fraction", None, listing(floats(0.01, 0.99)), bad_list(0.5, BAD_FRACTIONS[1:]),
             is_list=True),
    ],
    "symbol_add": [
        knob("task.p", 4, ints(2, 6), [0, 1, -1, 1001, INT32_END, 5.0, "5", True, None, NAN]),
        knob("task.train_fraction", 0.6, _fraction_symbol_add, _bad_fraction_symbol_add),
        nonneg_int("task.split_seed", 0, 0, INT32_END - 1),
        flag("task.full_batch"),
        choice("task.loss", losses.LOSSES),
        choice("task.loss_dtype", losses.DTYPES),
        knob("ensemble.train_fraction", None, listing(_fraction_symbol_add),
             lambda v: bad_list(0.6, _bad_fraction_symbol_add(v)[1:]), is_list=True),
    ],
    "mnist": [
        knob("task.source", "embedded", one_of("embedded"), ["/nonexistent/mnist", "Embedded", 3, None, ["embedded"]]),
        knob("task.n_train", 20, optional(ints(1, 30)), [0, -1, 5000, INT32_END, 1.5, NAN, "10", True]),
        nonneg_int("task.split_seed", 0, 0, INT32_END - 1),
        choice("task.loss", LOSSES),
        flag("task.full_batch"),
        nonneg_int("task.ntk_samples", 0, 0, 4),
    ],
    "teacher_student": [
        pos_int("task.d_in", 3, 1, 4),
        pos_int("task.d_out", 1, 1, 3),
        pos_int("task.teacher_width", 4, 1, 5),
        nonneg_int("task.teacher_depth", 1, 0, 2),
        choice("task.teacher_activation", TEACHER_ACTIVATIONS),
        nonneg_int("task.teacher_seed", 0, 0, INT32_END - 1),
        pos_int("task.n_train", 8, 1, 16),
        pos_int("task.n_test", 8, 1, 16),
        knob("task.tolerance", 0.5, floats(0.01, 2.0), BAD_POS),
        flag("task.full_batch"),
        nonneg_int("task.ntk_samples", 0, 0, 4),
    ],
    "induction": [  # drawn so that the layout fits: 2 <= block_min <= block_max <= vocab, seq_len >= block_max + 2
        knob("task.block_min", 2, ints(2, 4), BAD_POS_INT + [1]),
        knob("task.block_max", 3, lambda v: st.integers(v["task.block_min"], v["task.block_min"] + 3),
             lambda v: BAD_POS_INT + [v["task.block_min"] - 1, v["task.vocab"] + 1]),
        knob("task.vocab", 6, lambda v: st.integers(v["task.block_max"], v["task.block_max"] + 6), BAD_POS_INT + [1]),
        knob("task.seq_len", 6, lambda v: st.integers(v["task.block_max"] + 2, v["task.block_max"] + 8),
             lambda v: BAD_POS_INT + [v["task.block_max"] + 1]),
        pos_int("task.test_size", 4, 1, 6),
        knob("task.probe_size", 2, lambda v: st.integers(1, v["task.test_size"]),
             lambda v: BAD_POS_INT + [v["task.test_size"] + 1]),
        # segment: the segment and its copy both fit (seq_len >= 2 block_max); periodic always fits
        knob("task.layout", "periodic",
             lambda v: st.sampled_from(["periodic"] + (["segment"] if _segment_fits(v) else [])),
             lambda v: bad_choice(LAYOUTS) + ([] if _segment_fits(v) else ["segment"])),
    ],
}


def _divisors(n: int) -> list[int]:
    return [h for h in range(1, n + 1) if n % h == 0]


MODEL_KNOBS: dict[str, list[Knob]] = {
    "mlp": [
        pos_int("model.width", 4, 1, 6),
        pos_int("model.depth", 1, 1, 2),
        choice("model.activation", ACTIVATIONS),
        flag("model.control_gather"),
        knob("model.init_std", None, optional(floats(1e-3, 1.0)), no_none(BAD_POS)),
        *SCALE_KNOBS,
    ],
    "transformer": [
        pos_int("model.n_layers", 1, 1, 2),
        knob("model.d_model", 4, one_of(1, 2, 4, 6, 8), BAD_POS_INT),
        knob("model.n_heads", 2, lambda v: st.sampled_from(_divisors(v["model.d_model"])),
             lambda v: BAD_POS_INT + [v["model.d_model"] + 1]),
        pos_int("model.d_mlp", 8, 1, 8),
        choice("model.activation", ACTIVATIONS),
        choice("model.positions", POSITIONS),
        flag("model.layer_norm"),
        flag("model.tied"),
        knob("model.attn_only", False, lambda v: st.booleans(), [1, 0, "true", None, [True]]),  # checked: a bool
        *SCALE_KNOBS,
    ],
    "embed_mlp": [
        pos_int("model.d_embed", 4, 1, 4),
        pos_int("model.width", 4, 1, 6),
        knob("model.depth", 1, ints(0, 2), BAD_NONNEG_INT),
        choice("model.combine", COMBINES),
        choice("model.activation", ACTIVATIONS),
        *SCALE_KNOBS,
    ],
    "dense_mlp": [
        pos_int("model.width", 4, 1, 6),
        pos_int("model.depth", 1, 1, 2),
        choice("model.activation", ACTIVATIONS),
        *SCALE_KNOBS,
    ],
    "onehot_mlp": [
        pos_int("model.width", 4, 1, 6),
        pos_int("model.depth", 1, 1, 2),
        choice("model.activation", ACTIVATIONS),
        flag("model.bias"),
        *SCALE_KNOBS,
    ],
}


def owned_lists(task_name: str) -> set[str]:
    """The ensemble lists this task's members may vary: the engine's and the task's own."""
    keys = {**ENGINE_KEYS, **registry.task(task_name).member_keys}
    return {f"ensemble.{name}" for name, _ in keys.values()}


def foreign_list_knobs(task_name: str) -> list[Knob]:
    """Ensemble lists of other tasks: only null is allowed (a list, a scalar or a string there is
    named)."""
    samples = {name: [10] if kind is int else [0.5] for t in registry.tasks().values()
               for name, kind in t.member_keys.values()}
    mine = owned_lists(task_name)
    return [knob(f"ensemble.{name}", None, one_of(None), [sample, sample[0], str(sample[0])])
            for name, sample in samples.items() if f"ensemble.{name}" not in mine]


def knobs_for(task_name: str, model_name: str) -> list[Knob]:
    """Every knob of a task and model, in drawing order (a knob may depend on those before it)."""
    return [*TASK_KNOBS[task_name], *MODEL_KNOBS[model_name], *CORE, *embed_knobs(model_name),
            *foreign_list_knobs(task_name)]


CASES = [(name, model) for name, task in registry.tasks().items() for model in task.models]
# Reports under another key than the bad one (none: a task's own list is named as given,
# ensemble.train_fraction, since the list is validated value by value in config.validate)
ALSO_NAMED: dict = {}


class Case(NamedTuple):
    task: str
    model: str
    values: dict  # an allowed value for every knob
    bad: dict  # the knobs set to a value that is not allowed (none: the config is valid)


def tiny_values(task_name: str, model_name: str) -> dict:
    return {k.key: k.tiny for k in knobs_for(task_name, model_name)}


@st.composite
def cases(draw, pairs=tuple(CASES), n_bad=st.just(1)) -> Case:
    task_name, model_name = draw(st.sampled_from(pairs))
    knobs = knobs_for(task_name, model_name)
    lists = [k.key for k in knobs if k.is_list and k.key in owned_lists(task_name)]
    chosen = draw(st.lists(st.sampled_from(lists), max_size=2, unique=True))  # at most 2 x 2 x seeds members
    values: dict = {}
    for k in knobs:
        values[k.key] = (draw(k.valid(values)) if k.key in chosen else None) if k.is_list else draw(k.valid(values))
    corruptible = [k for k in knobs if k.bad(values)]
    n = draw(n_bad)
    picked = draw(st.lists(st.sampled_from(corruptible), min_size=n, max_size=n, unique_by=lambda k: k.key))
    return Case(task_name, model_name, values, {k.key: draw(st.sampled_from(k.bad(values))) for k in picked})


def build(case: Case, bad: bool = True) -> Config:
    """The config of a case: the dataclasses' defaults, then every knob's value (and the bad ones)."""
    cfg = Config(task=registry.task(case.task).config(), model=registry.model(case.model).config(),
                 optim=OptimConfig(), train=TrainConfig(progress=False), ensemble=EnsembleConfig(), name="prop")
    fields = {f.name for f in dataclasses.fields(EnsembleConfig)}
    for key, value in {**case.values, **(case.bad if bad else {})}.items():
        *parents, leaf = key.split(".")
        if parents == ["ensemble"] and leaf not in fields:  # a task's own list: in lists, as job.to_config puts it
            if value is not None:
                cfg.ensemble.lists = {**(cfg.ensemble.lists or {}), leaf: value}
            continue
        node = cfg
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
    return cfg


# --- what a property checks ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiles():
    """A counter of JAX's traces and compiles (its monitoring events), to show validate does neither."""
    counts = {"n": 0}

    def listener(event: str, *args, **kwargs) -> None:
        if event.startswith("/jax/core/compile/"):
            counts["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield lambda: counts["n"]
    jax.monitoring.unregister_event_duration_listener(listener)


def _same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN == NaN, 1 != 1.0 != True


def check_rejected(case: Case, exc: ConfigError) -> None:
    """The error names a key that was made bad, and that key's bad value (or the bad entry of a list)."""
    allowed_keys = set(case.bad) | {also for key in case.bad for also in ALSO_NAMED.get((case.task, key), ())}
    assert exc.key in allowed_keys, f"{exc} names {exc.key!r}, but the bad keys were {case.bad}"
    message = str(exc)
    assert message.startswith(f"{exc.key}=") and "is not allowed" in message and exc.allowed in message, message
    assert exc.allowed.strip(), message
    if exc.key in case.bad:
        shown = case.bad[exc.key]
    else:  # named under ALSO_NAMED: the bad list's offending entry
        (shown,) = [case.bad[key] for key in case.bad if exc.key in ALSO_NAMED.get((case.task, key), ())]
    candidates = [shown]
    if isinstance(shown, (list, tuple)):
        candidates += [list(shown), *shown]
    assert any(_same(exc.value, c) for c in candidates), f"{exc.value!r} is not the bad value {shown!r}"


def expected_members(cfg: Config, task_name: str) -> int:
    n = cfg.ensemble.seeds
    for key in owned_lists(task_name):
        values = ensemble_list(cfg, key.split(".")[1])
        n *= len(values) if values is not None else 1
    return n


def check_run(case: Case, cfg: Config) -> None:
    """A valid config trains: every metric at every log step, for every member."""
    members = expand(cfg)
    n_members = expected_members(cfg, case.task)
    assert len(members) == n_members
    result = fit(cfg, members)
    steps, tr = result.steps, cfg.train
    if tr.log_count is None:
        assert steps == sorted({0, tr.steps, *range(0, tr.steps + 1, tr.log_every)})
    else:
        assert steps[0] == 0 and steps[-1] == tr.steps and len(steps) <= tr.log_count + 2
        assert all(a < b for a, b in zip(steps, steps[1:])), steps
    assert result.steps_done == tr.steps
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "param_norm", "alive"} <= set(result.logs)
    for name in result.logs:
        values = result.log_array(name)
        assert values.shape[:2] == (len(steps), n_members), (name, values.shape)
        assert values.dtype.kind == "f", (name, values.dtype)
    if case.task == "sparse_parity":
        assert result.log_array("subtask_loss").shape == (len(steps), n_members, cfg.task.n_tasks)
    alive = result.log_array("alive")
    assert np.isin(alive, [0.0, 1.0]).all() and (alive[0] == 1.0).all()
    assert result.alive.shape == result.diverged_step.shape == (n_members,)
    for name in ("train_acc", "test_acc"):
        acc = result.log_array(name)
        assert ((acc[np.isfinite(acc)] >= 0) & (acc[np.isfinite(acc)] <= 1)).all(), (name, acc)
    # At step 0, before any update, a model at a moderate scale evaluates to finite numbers. A fixed
    # norm is not moderate on its own: a norm of 90 over a 1-wide transformer's few parameters
    # overflows its logits (seen: modular p=2, d_model=1, fixed_norm 90.8; the same before and after
    # the scale-out change), so only members without one are held to it.
    moderate = np.array([m["model.init_scale"] <= 10 and m["optim.fixed_norm"] is None for m in members])
    for name in ("train_loss", "test_loss", "train_acc", "test_acc", "param_norm"):
        first = result.log_array(name)[0]
        assert np.isfinite(first[moderate]).all(), (name, first, members)


def _event(name: str) -> None:
    """Counted in hypothesis's statistics (pytest --hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(name)


def check(case: Case, compiles: Callable[[], int], run: bool) -> None:
    """The property: rejected naming a bad key, before anything compiles, or (if `run`) trains."""
    cfg = build(case)
    before = compiles()
    try:
        validate(cfg)
    except ConfigError as exc:
        assert compiles() == before, "validate traced or compiled something"
        assert case.bad, f"an allowed config was rejected: {exc}"
        check_rejected(case, exc)
        _event("rejected")
        return
    assert compiles() == before, "validate traced or compiled something"
    assert not case.bad, f"validate accepted {case.bad}"
    if run:
        check_run(case, cfg)
        _event("trained")


SETTINGS = dict(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example, HealthCheck.filter_too_much])


# --- the properties ---------------------------------------------------------------------------------------

def test_every_config_key_has_a_knob():
    """Every registered task and model has knobs for every key of its config (but its name), so a
    new task, model or key cannot escape the properties."""
    for name, task in registry.tasks().items():
        assert name in TASK_KNOBS, f"task {name!r} has no knobs in tests/test_properties.py"
        keys = {k.key for k in TASK_KNOBS[name]}
        fields = {f"task.{f.name}" for f in dataclasses.fields(task.config)} - {"task.name"}
        assert fields == keys - {k for k in keys if k.startswith("ensemble.")}, (name, fields ^ keys)
        assert owned_lists(name) - {f"ensemble.{n}" for n, _ in ENGINE_KEYS.values()} <= keys, name
        for model in task.models:
            assert model in MODEL_KNOBS, f"model {model!r} has no knobs in tests/test_properties.py"
    for name, model in registry.models().items():
        if name in MODEL_KNOBS:
            fields = {f"model.{f.name}" for f in dataclasses.fields(model.config)} - {"model.name", "model.init_scale"}
            assert fields == {k.key for k in MODEL_KNOBS[name]}, (name, fields)


@pytest.mark.parametrize("task_name,model_name", CASES, ids=[f"{t}-{m}" for t, m in CASES])
def test_the_tiny_values_are_allowed(task_name, model_name):
    """Each knob's tiny value is allowed (the explicit examples below start from them)."""
    validate(build(Case(task_name, model_name, tiny_values(task_name, model_name), {})))


def _tiny_with(task_name: str, model_name: str, **bad) -> Case:
    return Case(task_name, model_name, tiny_values(task_name, model_name),
                {key.replace("__", "."): value for key, value in bad.items()})


@settings(max_examples=400, **SETTINGS)
@given(case=cases())
# The gaps this property found, before validate was fixed: what each config did then.
@example(case=_tiny_with("sparse_parity", "mlp", ensemble__lr=0.1))  # TypeError in validate: float has no len()
@example(case=_tiny_with("sparse_parity", "mlp", ensemble__lr="0.1"))  # rejected as the list ['0', '.', '1']
@example(case=_tiny_with("mnist", "dense_mlp", task__source=3))  # TypeError in validate, from Path(3)
@example(case=_tiny_with("modular", "embed_mlp", task__op=["add"]))  # TypeError in validate: unhashable type: 'list'
@example(case=_tiny_with("modular", "transformer", task__train_fraction=HUGE_INT))  # OverflowError (math.isfinite)
@example(case=_tiny_with("teacher_student", "dense_mlp", optim__lr=HUGE_INT))  # OverflowError (math.isfinite)
@example(case=_tiny_with("sparse_parity", "mlp", task__D=INT32_END))  # valid; OverflowError in fit (int32 members)
@example(case=_tiny_with("sparse_parity", "mlp", ensemble__D=[INT32_END]))  # the same, through the list
@example(case=_tiny_with("symbol_add", "embed_mlp", optim__warmup_steps=INT32_END))  # valid; OverflowError in optax
@example(case=_tiny_with("teacher_student", "dense_mlp", train__steps=INT32_END))  # valid; the int32 step counter wraps
@example(case=_tiny_with("teacher_student", "dense_mlp", ensemble__seeds=INT32_END))  # named seed, not ensemble.seeds
def test_one_bad_key_is_rejected_and_named(case, compiles):
    """An allowed config of every task and model validates; the same config with one key made bad
    is a ConfigError naming that key and its value, raised before anything compiles."""
    before = compiles()
    validate(build(case, bad=False))
    assert compiles() == before
    check(case, compiles, run=False)


def _rejected_or_trains(task_name, model_name, data, compiles):
    case = data.draw(cases(pairs=((task_name, model_name),), n_bad=st.sampled_from([0, 0, 0, 1, 2])))
    check(case, compiles, run=True)


@pytest.mark.parametrize("task_name,model_name", CASES, ids=[f"{t}-{m}" for t, m in CASES])
@settings(max_examples=1, **SETTINGS)
@given(data=st.data())
def test_a_config_is_rejected_naming_a_bad_key_or_trains(task_name, model_name, data, compiles):
    """The whole property: a config with bad keys (0 to 2 of them) is a ConfigError naming one of
    them; an allowed one (most draws) trains a few steps with every metric of every member logged.
    One draw per task and model here (each that trains compiles); 25 under `pytest -m slow`."""
    _rejected_or_trains(task_name, model_name, data, compiles)


@pytest.mark.slow
@pytest.mark.parametrize("task_name,model_name", CASES, ids=[f"{t}-{m}" for t, m in CASES])
@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_many_configs_are_rejected_naming_a_bad_key_or_train(task_name, model_name, data, compiles):
    _rejected_or_trains(task_name, model_name, data, compiles)


def test_a_valid_config_at_the_int32_edge_trains(compiles):
    """optim.warmup_steps = 2^31 - 1, the largest allowed, reaches optax's schedule without overflow
    (2^31 raised OverflowError there before validate bounded every integer below 2^31)."""
    case = _tiny_with("teacher_student", "dense_mlp")
    case.values.update({"optim.warmup_steps": INT32_END - 1, "seed": INT32_END - 2, "task.teacher_seed": INT32_END - 1})
    check(case, compiles, run=True)


def test_a_scalar_for_another_tasks_list_is_named():
    """ensemble.train_fraction=0.5 (a scalar, not a list) for sparse parity, whose members have no
    training fraction: a ConfigError naming ensemble.train_fraction."""
    with pytest.raises(ConfigError) as info:
        validate(build(_tiny_with("sparse_parity", "mlp", ensemble__train_fraction=0.5)))
    assert info.value.key == "ensemble.train_fraction"
