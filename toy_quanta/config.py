"""Structured configs (Hydra ConfigStore) and their validation.

The dataclasses are the schema: Hydra rejects unknown or mistyped keys against them.
`validate` adds the checks a type cannot express, and runs before anything compiles.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from toy_quanta import checks, hooks, registry
from toy_quanta.checks import ensemble_list, get
from toy_quanta.errors import ConfigError

# config key -> (the ensemble list that varies it, its type): the per-member scalars every task has
ENGINE_KEYS: dict[str, tuple[str, type]] = {"model.init_scale": ("init_scale", float),
                                            "model.output_scale": ("output_scale", float), "optim.lr": ("lr", float),
                                            "optim.weight_decay": ("weight_decay", float), "optim.eps": ("eps", float),
                                            "optim.fixed_norm": ("fixed_norm", float),
                                            "optim.grokfast": ("grokfast", str),
                                            "optim.grokfast_alpha": ("grokfast_alpha", float),
                                            "optim.grokfast_lambda": ("grokfast_lambda", float)}

OPTIMIZERS = ("adam", "adamw", "sgd")
# Grokfast's gradient filters (engine.filters); a member's kind is its index here
GRAD_FILTERS = ("none", "ema", "ma")
# per-member keys whose values are names: the engine holds a member's as its index here
MEMBER_CHOICES: dict[str, tuple[str, ...]] = {"optim.grokfast": GRAD_FILTERS}
SCHEDULES = ("constant", "cosine", "linear")


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
    # Grokfast (Lee et al. 2024): the gradients the rule sees are g + grokfast_lambda * slow(g),
    # slow the EMA (alpha) or the mean of the last grokfast_window gradients (ma; with warmup,
    # nothing is added until the window is full). none: off. Kind, alpha and lambda are per member
    # (ensemble.grokfast, grokfast_alpha, grokfast_lambda, or ensemble.arms); the ma window costs
    # grokfast_window copies of the gradients per member.
    grokfast: str = "none"
    grokfast_alpha: float = 0.98
    grokfast_lambda: float = 2.0
    grokfast_window: int = 100
    grokfast_warmup: bool = True
    # Prieto et al. 2025: each tensor's gradient minus its component along the weights, rescaled
    # to the gradient's norm, before the rule (and before the grokfast filter).
    orthogonal: bool = False


@dataclass
class TrainConfig:
    steps: int = 2_000
    batch_size: int = 1_000
    log_every: int = 100  # log at every multiple of this step (and at step 0 and the end)
    log_count: Optional[int] = None  # if set: log at this many log-spaced steps instead
    eval_batch_size: int = 8_192  # evaluation runs in blocks of this size to bound memory
    # Most samples in one forward/backward pass; larger batches accumulate gradients over equal
    # micro-batches (same update up to float rounding), for every task. null: the task's default:
    # sparse parity 4096 on CPU (5-10% faster at the paper's batch, and bounded activation memory)
    # and the whole batch on GPU; the other tasks the whole batch.
    microbatch: Optional[int] = None
    progress: bool = True  # progress bar on stderr
    checkpoint: bool = True  # save final parameters to checkpoint.msgpack
    # Save the whole training state to train_state.npz this often (seconds, at a chunk boundary),
    # at the end, and on SIGTERM/SIGINT; the same command with the same output directory resumes
    # from it. null: never (a killed run starts again from step 0); 0: after every call.
    checkpoint_every_s: Optional[float] = 300.0
    # Shard the members over this many devices (null: every visible one); see docs/scaling-out.md.
    devices: Optional[int] = None
    # JAX's persistent compilation cache: a sweep's jobs of one shape compile once. null: off.
    compilation_cache: Optional[str] = "~/.cache/toy_quanta/jax"
    # Also every member's parameters at every log step, to snapshots.msgpack (progress measures
    # over training: toy-quanta-progress). Costs log steps x parameters x members x 4 bytes.
    snapshots: bool = False
    # The job's figures (curves.png, the task's others). null: drawn, except in a job of a multirun,
    # whose sweep gets one overview figure instead (sweep.png); `toy-quanta-figures DIR` draws any
    # job's from its files later. true/false: always/never.
    figures: Optional[bool] = None
    # TensorBoard event files in the job's tensorboard/ (one run per member, every metric at every
    # log step, the figures at the end): `tensorboard --logdir outputs` watches runs live.
    tensorboard: bool = False
    # Weights & Biases runs in the job's wandb/ (the wandb extra: one run per member, grouped by
    # sweep and job, every metric at every log step, the figures, the config). WANDB_MODE=offline
    # writes them without a network, for `wandb sync` later.
    wandb: bool = False
    # The W&B project (1 to 128 characters, none of / \ # ? % :); null: $WANDB_PROJECT, else toy-quanta.
    wandb_project: Optional[str] = None
    # End the run before train.steps once every member has had stop_metric at stop_at_least (or
    # at most stop_at_most) for stop_hold consecutive log steps (a per-subtask metric: every
    # subtask); summary.json["stopped"] records it. stop_metric null: the whole budget, whatever
    # the levels say (engine/milestone.py).
    stop_metric: Optional[str] = None
    stop_at_least: Optional[float] = None  # the level stop_metric must reach (an accuracy, a strength)
    stop_at_most: Optional[float] = None  # or fall to (a loss); exactly one of the two with a metric
    stop_hold: int = 3  # consecutive log steps every member must hold it


@dataclass
class EnsembleConfig:
    """Members of one job, trained as one vmapped program: the product of the lists (the task's
    own first, then these in this order; the first varying slowest), times seeds.

    The fields are the engine's per-member lists. A task's own (sparse parity's alpha and D, a
    user's noise: Task.member_keys) are no fields: `ensemble.alpha=[0.2,0.4]` lands in `lists`
    (the ensemble node is open, so no `+` is needed), where the members are made from it."""

    seeds: int = 1  # members per grid point, with seeds seed, seed+1, ...
    init_scale: Optional[list[float]] = None
    output_scale: Optional[list[float]] = None  # model.output_scale per member (lazy to rich)
    lr: Optional[list[float]] = None
    weight_decay: Optional[list[float]] = None
    eps: Optional[list[float]] = None  # Adam's eps per member (Slingshot: a larger eps damps the cycles)
    fixed_norm: Optional[list[float]] = None  # LU runs: each member's fixed parameter norm w
    grokfast: Optional[list[str]] = None  # optim.grokfast per member: none, ema, ma
    grokfast_alpha: Optional[list[float]] = None
    grokfast_lambda: Optional[list[float]] = None
    # Named arms, each a set of per-member values (`{ema: {optim.grokfast: ema, optim.weight_decay:
    # 0.005}}`; dotted or nested keys): the lists' product is taken once per arm, the arms in this
    # order (slowest). Comparisons of unlike settings, side by side in one program; the job's
    # summary compares the arms (analysis/arms.py).
    arms: Any = None  # null or {}: no arms (typed Any: Hydra merges a mapping into a null Dict node badly)
    # the validation accuracies at which the arms are compared (steps to reach each)
    arms_levels: list[float] = field(default_factory=lambda: [0.95, 0.99])
    # The task's own per-member lists (Task.member_keys), by list name: `ensemble.noise=[0.0,0.2]`
    # for a user's task.noise, `ensemble.D=[...]` for sparse parity's. Read with ensemble_list.
    lists: Any = None  # typed Any, as arms


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
    # A Python file (or module name) of your own tasks and models, imported before the config is
    # composed, so task=<your task> works (docs/adding-a-task.md).
    tasks_module: Optional[str] = None


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


# The `cluster` extra's launchers (docs/scaling-out.md). Their configs come from Hydra's plugins,
# imported only if installed; ours extend them. Several JAX processes sharing one GPU must not each
# preallocate 75% of its memory: the local multi-process launchers set SHARED_GPU_ENV in every
# worker before JAX starts there (submitit: shell lines its controller runs before starting the
# job; joblib: the environment its workers start with).
SHARED_GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
SHARED_GPU_SETUP = [f"export {key}={value}" for key, value in SHARED_GPU_ENV.items()]
try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
except ImportError:  # no cluster extra: no submitit launchers
    LocalQueueConf = SlurmQueueConf = None
try:
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
except ImportError:
    JobLibLauncherConf = None

if LocalQueueConf is not None:
    @dataclass
    class SubmititLocalConf(LocalQueueConf):
        """`hydra/launcher=submitit_local`: Hydra's, plus `setup`, shell lines run before the jobs start
        (submitit's local executor; default: no GPU preallocation). Like Hydra's, the jobs see no GPU
        unless gpus_per_node is set (submitit sets CUDA_VISIBLE_DEVICES to the first gpus_per_node)."""

        setup: Optional[list[str]] = field(default_factory=lambda: list(SHARED_GPU_SETUP))

    @dataclass
    class VmapSubmititLocalConf(SubmititLocalConf):
        """`hydra/launcher=vmap_submitit_local`: each vmap group one local submitit job (a process)."""

        _target_: str = "hydra_plugins.toy_quanta_vmap_launcher._vmap_submitit.VmapSubmititLocalLauncher"
        max_group_members: Optional[int] = None  # split larger groups into several jobs (memory)
        gpus_per_node: Optional[int] = 1  # every job sees GPU 0 (none on a machine without one)
        max_num_timeout: int = 3  # requeues after a timeout (submitit's local default)

    @dataclass
    class SubmititSlurmConf(SlurmQueueConf):
        """`hydra/launcher=submitit_slurm`: Hydra's (every setting), its wait on SLURM bounded and its
        jobs' signals handled as the vmap launchers' are (docs/scaling-out.md)."""

        _target_: str = "hydra_plugins.toy_quanta_vmap_launcher._submitit.SubmititSlurmLauncher"

    @dataclass
    class VmapSubmititSlurmConf(SlurmQueueConf):
        """`hydra/launcher=vmap_submitit_slurm`: each vmap group one SLURM (array) job; every setting of
        Hydra's submitit_slurm. Requeue on timeout needs max_num_timeout > 0 (docs/scaling-out.md)."""

        _target_: str = "hydra_plugins.toy_quanta_vmap_launcher._vmap_submitit.VmapSubmititSlurmLauncher"
        max_group_members: Optional[int] = None  # split larger groups into several jobs (memory)

if JobLibLauncherConf is not None:
    @dataclass
    class JoblibConf(JobLibLauncherConf):
        """`hydra/launcher=joblib`: Hydra's, plus `env`, variables its worker processes start with."""

        _target_: str = "hydra_plugins.toy_quanta_vmap_launcher._joblib.JoblibLauncher"
        env: dict[str, str] = field(default_factory=lambda: dict(SHARED_GPU_ENV))


def register_configs() -> None:
    """Store the schema in Hydra's ConfigStore: the core configs, and a task/ and model/ group
    option for every registered task and model; and the `div` resolver (`${div:6.4,${task.n}}`:
    a value in proportion to another key, e.g. conf/lr_rule/inverse_n.yaml)."""
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))
    cs = ConfigStore.instance()
    base = OmegaConf.structured(Config)
    # open: a task's own list needs no field and no `+` (ensemble.alpha=[...], ensemble.noise=[...]);
    # job.to_config moves it into ensemble.lists and refuses a name the task does not declare
    OmegaConf.set_struct(base.ensemble, False)
    cs.store(name="base_config", node=base)
    cs.store(name="qdg_config", node=QDGConfig)
    for name, task in registry.tasks().items():
        cs.store(group="task", name=name, node=task.config)
    for name, model in registry.models().items():
        cs.store(group="model", name=name, node=model.config)
    for name in OPTIMIZERS:
        cs.store(group="optim", name=name, node=OptimConfig(name=name))
    cs.store(group="hydra/launcher", name="vmap", node=VmapLauncherConf, provider="toy_quanta")
    if LocalQueueConf is not None:  # after Hydra's own (see cli.app._register_launcher): same names, our variants
        cs.store(group="hydra/launcher", name="submitit_local", node=SubmititLocalConf, provider="submitit_launcher")
        cs.store(group="hydra/launcher", name="vmap_submitit_local", node=VmapSubmititLocalConf, provider="toy_quanta")
        cs.store(group="hydra/launcher", name="vmap_submitit_slurm", node=VmapSubmititSlurmConf, provider="toy_quanta")
        cs.store(group="hydra/launcher", name="submitit_slurm", node=SubmititSlurmConf, provider="submitit_launcher")
    if JobLibLauncherConf is not None:
        cs.store(group="hydra/launcher", name="joblib", node=JoblibConf, provider="joblib_launcher")


def fold_task_lists(cfg: DictConfig) -> None:
    """`ensemble.<name>=[...]` for a name EnsembleConfig has no field for (a task's own list, as
    ensemble.alpha or a user's ensemble.noise) moves into ensemble.lists, where the members are
    made from it; validate refuses a name the task does not declare."""
    ensemble = cfg.get("ensemble")
    if not isinstance(ensemble, DictConfig):
        return
    own = [name for name in ensemble if name not in {f.name for f in dataclasses.fields(EnsembleConfig)}]
    if not own:
        return
    data = OmegaConf.to_container(ensemble, resolve=False)  # a structured node deletes no key: rebuilt
    data["lists"] = {**(data.get("lists") or {}), **{name: data.pop(name) for name in own}}
    with open_dict(cfg):
        cfg.ensemble = OmegaConf.merge(OmegaConf.structured(EnsembleConfig), data)


def validate(cfg: Any) -> None:
    """Raise ConfigError for the first value that is not allowed. `cfg` is a Config (or its dict).
    The task and the model check their own keys (Task.validate, Model.validate)."""
    task = registry.task(get(cfg, "task.name"))
    model = registry.model(get(cfg, "model.name"))
    checks.choice(cfg, "optim.name", OPTIMIZERS)
    if model.name not in task.models:
        raise ConfigError("model", model.name, f"a model for task {task.name}: one of {', '.join(task.models)}")
    _validate_ensemble_lists(cfg, task)
    task.validate(cfg)
    checks.finite(cfg, "model.init_scale", positive=True)
    _validate_output_scale(cfg, model)
    model.validate(cfg)
    _validate_norm_and_embed(cfg, model)
    _validate_phase(cfg, task)

    checks.finite(cfg, "optim.lr", positive=True)
    checks.finite(cfg, "optim.weight_decay", nonneg=True)
    _validate_grad_transforms(cfg)
    for key in ("optim.b1", "optim.b2", "optim.momentum"):
        value = get(cfg, key)
        checks.finite(cfg, key, nonneg=True)
        if value >= 1:
            raise ConfigError(key, value, "a number in [0, 1)")
    checks.finite(cfg, "optim.eps", positive=True)
    checks.list_of(cfg, "ensemble.eps", positive=True)
    checks.nonneg_int(cfg, "optim.warmup_steps")
    checks.choice(cfg, "optim.schedule", SCHEDULES)
    checks.finite(cfg, "optim.final_lr_factor", nonneg=True)
    if get(cfg, "optim.grad_clip") is not None:
        checks.finite(cfg, "optim.grad_clip", positive=True)

    for key in ("train.steps", "train.batch_size", "train.log_every", "train.eval_batch_size"):
        checks.positive_int(cfg, key)
    if get(cfg, "train.checkpoint_every_s") is not None:
        checks.finite(cfg, "train.checkpoint_every_s", nonneg=True)
    for key in ("train.log_count", "train.microbatch", "train.devices"):
        if get(cfg, key) is not None:
            checks.positive_int(cfg, key)
    for key in ("train.progress", "train.checkpoint", "train.snapshots", "train.tensorboard", "train.wandb"):
        checks.boolean(cfg, key)
    if get(cfg, "train.figures") is not None:
        checks.boolean(cfg, "train.figures")
    _validate_wandb_project(cfg)
    hooks.check_monitors(cfg)  # a monitor turned on that cannot run (W&B not installed)
    _validate_stop(cfg)

    checks.positive_int(cfg, "ensemble.seeds")
    checks.list_of(cfg, "ensemble.lr", positive=True)
    checks.list_of(cfg, "ensemble.init_scale", positive=True)
    checks.list_of(cfg, "ensemble.weight_decay", nonneg=True)
    seed = get(cfg, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31 - get(cfg, "ensemble.seeds"):
        raise ConfigError("seed", seed, "an integer in [0, 2^31 - ensemble.seeds)")
    _validate_arms(cfg, task)


def _validate_wandb_project(cfg: Any) -> None:
    """train.wandb_project: null or a name W&B takes (it refuses these characters, and only when
    the run starts)."""
    project = get(cfg, "train.wandb_project")
    if project is None:
        return
    if not isinstance(project, str) or not project or len(project) > 128 or any(c in project for c in "/\\#?%:"):
        raise ConfigError("train.wandb_project", project, "null, or a W&B project name: 1 to 128 characters, "
                                                          "none of / \\ # ? % :")


def _validate_stop(cfg: Any) -> None:
    """train.stop_*: a metric's name and exactly one level for it, or no rule at all (whether the
    task logs the metric is checked when its program is built, before it compiles: engine.loop.fit)."""
    metric, least, most = (get(cfg, f"train.stop_{k}") for k in ("metric", "at_least", "at_most"))
    checks.positive_int(cfg, "train.stop_hold")
    if metric is None:  # no rule: `train.stop_metric=null` alone turns an experiment's rule off
        return
    if not isinstance(metric, str) or not metric:
        raise ConfigError("train.stop_metric", metric, "the name of a logged metric (e.g. test_acc), or null")
    if (least is None) == (most is None):
        raise ConfigError("train.stop_at_least", least, "a number, with train.stop_at_most null (or the other way "
                                                        f"round: exactly one level for train.stop_metric={metric})")
    checks.finite(cfg, "train.stop_at_least" if least is not None else "train.stop_at_most")


def _validate_output_scale(cfg: Any, model: Any) -> None:
    """model.output_scale and model.centred (engine.scaled): every built-in model config has them;
    one of your own may leave them out, and then no member may ask for a scale."""
    try:
        get(cfg, "model.output_scale")
    except (AttributeError, KeyError):
        if get(cfg, "ensemble.output_scale") is not None:
            raise ConfigError("ensemble.output_scale", get(cfg, "ensemble.output_scale"),
                              f"null for model={model.name} (its config has no output_scale)") from None
        return
    checks.finite(cfg, "model.output_scale", positive=True)
    checks.list_of(cfg, "ensemble.output_scale", positive=True)
    checks.boolean(cfg, "model.centred")


def _validate_grad_transforms(cfg: Any) -> None:
    checks.choice(cfg, "optim.grokfast", GRAD_FILTERS)
    alpha = get(cfg, "optim.grokfast_alpha")
    checks.finite(cfg, "optim.grokfast_alpha", nonneg=True)
    if alpha >= 1:
        raise ConfigError("optim.grokfast_alpha", alpha, "a number in [0, 1) (the EMA's decay per step)")
    checks.finite(cfg, "optim.grokfast_lambda", nonneg=True)
    checks.positive_int(cfg, "optim.grokfast_window")
    checks.list_of(cfg, "ensemble.grokfast_lambda", nonneg=True)
    checks.list_of(cfg, "ensemble.grokfast_alpha", nonneg=True)
    if any(a >= 1 for a in get(cfg, "ensemble.grokfast_alpha") or []):
        raise ConfigError("ensemble.grokfast_alpha", list(get(cfg, "ensemble.grokfast_alpha")), "numbers in [0, 1), or null")
    kinds = get(cfg, "ensemble.grokfast")
    if kinds is not None and (isinstance(kinds, (str, Mapping)) or not isinstance(kinds, (list, tuple, Sequence))
                              or not kinds or any(k not in GRAD_FILTERS for k in kinds)):
        shown = list(kinds) if isinstance(kinds, (list, tuple)) else kinds
        raise ConfigError("ensemble.grokfast", shown, f"a non-empty list of {', '.join(GRAD_FILTERS)}, or null")
    for key in ("optim.grokfast_warmup", "optim.orthogonal"):
        checks.boolean(cfg, key)


def arm_values(values: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """One arm's values under dotted keys: {optim: {lr: 1}} and {"optim.lr": 1} are the same."""
    out = {}
    for key, value in (values or {}).items():
        if isinstance(value, Mapping):
            out.update(arm_values(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _validate_arms(cfg: Any, task: Any) -> None:
    """Each arm sets per-member keys of this task that no ensemble list varies, to values their
    config keys allow (checked by validating the config with the arm's values in)."""
    levels = get(cfg, "ensemble.arms_levels")
    if (not isinstance(levels, Sequence) or isinstance(levels, str) or not levels
            or not all(checks.finite_number(v) and 0 < v <= 1 for v in levels)):
        raise ConfigError("ensemble.arms_levels", levels, "a non-empty list of accuracies in (0, 1]")
    arms = get(cfg, "ensemble.arms")
    if arms is None or (isinstance(arms, Mapping) and not arms):
        return
    what = "a mapping of arm names to per-member values ({baseline: {}, ema: {optim.grokfast: ema}}), or {}"
    if not isinstance(arms, Mapping):
        raise ConfigError("ensemble.arms", arms, what)
    keys = {**task.member_keys, **ENGINE_KEYS}
    for name, values in arms.items():
        if not isinstance(name, str) or not name or any(c in name for c in ".=,[]{}"):
            raise ConfigError("ensemble.arms", name, "arm names without . = , brackets or braces (a command line "
                                                     "cannot address such a name: +ensemble.arms.NAME=...)")
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"ensemble.arms.{name}", values, what)
        for key, value in arm_values(values).items():
            where = f"ensemble.arms.{name}.{key}"
            if key not in keys:
                raise ConfigError(where, value, f"a per-member key of task {task.name}: one of {', '.join(keys)}")
            if ensemble_list(cfg, keys[key][0]) is not None:
                raise ConfigError(where, value, f"unset here or in ensemble.{keys[key][0]} (not both)")
            try:
                validate(_with(cfg, {key: value, "ensemble.arms": None}))
            except ConfigError as exc:
                raise ConfigError(where if exc.key == key else exc.key, exc.value, exc.allowed) from None


def _with(cfg: Any, values: dict[str, Any]) -> Any:
    """A copy of cfg (a Config or its dict) with the dotted keys set."""
    out = copy.deepcopy(cfg)
    for key, value in values.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        if isinstance(node, dict):
            node[last] = value
        else:
            setattr(node, last, value)
    return out


def _validate_ensemble_lists(cfg: Any, task: Any) -> None:
    """A task's own list (ensemble.lists) varies a key the task declares (Task.member_keys): a
    non-empty list whose every value the task's config allows (validated with it in place)."""
    mine = {name: key for key, (name, _) in task.member_keys.items()}
    own = ensemble_list(cfg, "lists") or {}
    if not isinstance(own, Mapping):
        raise ConfigError("ensemble.lists", own, "a mapping of list names to values, or null")
    for name, values in own.items():
        shown = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else values
        if name not in mine:
            owners = [t.name.replace("_", " ") for t in registry.tasks().values()
                      if name in {n for n, _ in t.member_keys.values()}]
            if owners:
                raise ConfigError(f"ensemble.{name}", shown, f"null for task={task.name} (it belongs to "
                                                             f"{' and '.join(owners)})")
            names = [*mine, *(f.name for f in fields(EnsembleConfig))]
            near = difflib.get_close_matches(str(name), names, n=1)
            raise ConfigError(f"ensemble.{name}", shown, f"a per-member list of task {task.name}: one of "
                              f"{', '.join(names)}" + (f" (did you mean ensemble.{near[0]}?)" if near else ""))
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ConfigError(f"ensemble.{name}", shown, f"a non-empty list of values of {mine[name]}")
        for value in values:
            try:
                validate(_with(cfg, {mine[name]: value, "ensemble.lists": None}))
            except ConfigError as exc:
                raise ConfigError(f"ensemble.{name}" if exc.key == mine[name] else exc.key,
                                  shown if exc.key == mine[name] else exc.value, exc.allowed) from None


def _validate_norm_and_embed(cfg: Any, model: Any) -> None:
    if get(cfg, "optim.fixed_norm") is not None:
        checks.finite(cfg, "optim.fixed_norm", positive=True)
    checks.list_of(cfg, "ensemble.fixed_norm", positive=True)
    if get(cfg, "optim.embed_lr") is not None:
        checks.finite(cfg, "optim.embed_lr", positive=True)
    if get(cfg, "optim.embed_weight_decay") is not None:
        checks.finite(cfg, "optim.embed_weight_decay", nonneg=True)
    if not model.embedding:
        with_embedding = [m.name for m in registry.models().values() if m.embedding]
        for key in ("optim.embed_lr", "optim.embed_weight_decay"):
            if get(cfg, key) is not None:
                raise ConfigError(key, get(cfg, key), f"null for model={model.name} (it has no embedding; "
                                                      f"{' and '.join(with_embedding)} do)")




def _validate_phase(cfg: Any, task: Any) -> None:
    """A phase diagram's axes are two numeric per-member keys of the job (the task's or the
    engine's), each varied by its ensemble list."""
    x, y = get(cfg, "phase.x"), get(cfg, "phase.y")
    if x is None and y is None:
        return
    axes = {key: name for key, (name, kind) in {**task.member_keys, **ENGINE_KEYS}.items() if kind is not str}
    for key, value in (("phase.x", x), ("phase.y", y)):
        if value not in axes:
            raise ConfigError(key, value, "one of " + ", ".join(axes) + " (both phase.x and phase.y, or neither)")
        if ensemble_list(cfg, axes[value]) is None:
            raise ConfigError(key, value, f"a grid axis: set ensemble.{axes[value]} to the list of its values")
    if x == y:
        raise ConfigError("phase.y", y, "a key other than phase.x")
    threshold = get(cfg, "phase.threshold")
    checks.finite(cfg, "phase.threshold", positive=True)
    if threshold > 1:
        raise ConfigError("phase.threshold", threshold, "an accuracy in (0, 1]")
    checks.nonneg_int(cfg, "phase.gap_steps")


QDG_PARAMS = ("control", "bits", "hidden", "out")
QDG_GRADIENTS = ("loss", "margin")
QDG_AFFINITIES = ("angular", "cosine")


def validate_qdg(cfg: Any) -> None:
    """Raise ConfigError for the first QDGConfig value that is not allowed."""
    for key in ("n_samples", "max_draws", "n_clusters", "n_init", "envelope_min_size", "block"):
        checks.positive_int(cfg, key)
    if isinstance(cfg.member, bool) or not isinstance(cfg.member, int) or cfg.member < 0:
        raise ConfigError("member", cfg.member, "an integer >= 0 (the index of a member of the run's ensemble)")
    checks.finite(cfg, "loss_threshold_bits", positive=True)
    params = list(cfg.params)
    if not params or len(set(params)) != len(params) or any(p not in QDG_PARAMS for p in params):
        raise ConfigError("params", params, f"a non-empty list of distinct names from {list(QDG_PARAMS)}")
    checks.choice(cfg, "gradient", QDG_GRADIENTS)
    checks.choice(cfg, "affinity", QDG_AFFINITIES)
    counts = list(cfg.envelope_counts)
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in counts):
        raise ConfigError("envelope_counts", counts, "a non-empty list of integers >= 2")
    if cfg.n_clusters < 2:
        raise ConfigError("n_clusters", cfg.n_clusters, "an integer >= 2")
    largest = max(cfg.n_clusters, *counts)
    if largest >= cfg.n_samples:
        raise ConfigError("n_samples", cfg.n_samples, f"more than the largest cluster count ({largest})")
