"""Config schema, validation (toy_quanta.config.validate: the core checks and each task's and model's)
and Hydra composition of the packaged configs (conf/, the experiments)."""

from __future__ import annotations

import dataclasses
import math
from importlib import resources

import pytest
import yaml
from hydra import compose
from omegaconf import OmegaConf

from conftest import grid, sparse_parity, symbol_add, teacher, tiny_config, with_values
from toy_quanta import registry
from toy_quanta.checks import ensemble_list
from toy_quanta.engine.members import expand
from toy_quanta.job import to_config
from toy_quanta.config import Config, OptimConfig, QDGConfig, validate, validate_qdg
from toy_quanta.errors import ConfigError
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.models.mlp import n_params
from toy_quanta.models.transformer import TransformerConfig
from toy_quanta.tasks.mnist import MNISTConfig
from toy_quanta.tasks.modular import ModularConfig


def _with(cfg: Config, key: str, value) -> Config:
    """A copy of cfg with the dotted key set (dataclasses, so no type checks get in the way)."""
    cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task), model=dataclasses.replace(cfg.model),
                              optim=dataclasses.replace(cfg.optim), train=dataclasses.replace(cfg.train),
                              ensemble=dataclasses.replace(cfg.ensemble))
    *parents, leaf = key.split(".")
    if parents == ["ensemble"] and leaf not in {f.name for f in dataclasses.fields(cfg.ensemble)}:
        cfg.ensemble.lists = {**(cfg.ensemble.lists or {}), leaf: value}  # a task's own list, as to_config
        return cfg
    node = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)
    return cfg


def test_tiny_config_is_valid():
    validate(tiny_config())


# (key, bad value, expected text of the value in the message)
BAD = [
    ("task.k", 9, "9"),  # k > n (n = 8)
    ("task.k", 0, "0"),
    ("task.k", -2, "-2"),
    ("task.n_tasks", 57, "57"),  # > C(8, 3) = 56
    ("task.n_tasks", 0, "0"),
    ("task.n_tasks", -1, "-1"),
    ("task.alpha", -0.1, "-0.1"),
    ("task.alpha", float("nan"), "nan"),
    ("task.n", 0, "0"),
    ("task.D", 0, "0"),
    ("task.D", -5, "-5"),
    ("task.test_size", 0, "0"),
    ("task.per_task_test", 0, "0"),
    ("model.width", 0, "0"),
    ("model.width", -3, "-3"),
    ("model.depth", 0, "0"),
    ("model.activation", "swish", "swish"),
    ("model.init_scale", 0.0, "0.0"),
    ("model.name", "cnn", "cnn"),
    ("optim.lr", 0.0, "0.0"),
    ("optim.lr", -1e-3, "-0.001"),
    ("optim.lr", float("nan"), "nan"),
    ("optim.lr", float("inf"), "inf"),
    ("optim.name", "rmsprop", "rmsprop"),
    ("optim.weight_decay", -1.0, "-1.0"),
    ("optim.b1", 1.0, "1.0"),
    ("optim.momentum", 1.5, "1.5"),
    ("optim.warmup_steps", -1, "-1"),
    ("optim.schedule", "step", "step"),
    ("optim.grad_clip", 0.0, "0.0"),
    ("train.steps", 0, "0"),
    ("train.steps", -10, "-10"),
    ("train.batch_size", 0, "0"),
    ("train.log_every", 0, "0"),
    ("train.log_count", 0, "0"),
    ("train.eval_batch_size", 0, "0"),
    ("train.microbatch", 0, "0"),
    ("ensemble.seeds", 0, "0"),
    ("ensemble.lr", [1e-3, -1.0], "-1.0"),
    ("ensemble.lr", [], "[]"),
    ("ensemble.alpha", [0.4, -0.5], "-0.5"),
    ("ensemble.weight_decay", [float("inf")], "inf"),
    ("ensemble.D", [100, 0], "[100, 0]"),
    ("ensemble.D", [], "[]"),
    ("seed", -1, "-1"),
    ("task.name", "vision", "vision"),
]


@pytest.mark.parametrize("key,value,shown", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_validate_names_key_and_value(key, value, shown):
    """Every bad value raises ConfigError naming the key and the value."""
    with pytest.raises(ConfigError) as info:
        validate(_with(tiny_config(), key, value))
    msg = str(info.value)
    assert key in msg, msg
    assert shown in msg, msg
    assert info.value.key == key


@pytest.mark.parametrize("key,value", [("task.k", 2.5), ("model.width", 16.0), ("train.steps", True), ("optim.lr", "1e-3"),
                                       ("task.D", 10.5)])
def test_validate_rejects_wrong_types(key, value):
    """Non-integers where integers belong (bools included) and strings for numbers are rejected."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_with(tiny_config(), key, value))


@pytest.mark.parametrize("changes", [
    {"task.n_tasks": 56},  # = C(8, 3)
    {"task.k": 8, "task.n_tasks": 1},  # k = n: one subset
    {"task.k": 1},
    {"task.alpha": 0.0},
    {"task.D": 1},
    {"optim.lr": 1e30},
    {"optim.lr": 1},
    {"optim.grad_clip": 1e-3},
    {"train.log_count": 5},
    {"ensemble.lr": [1e-3, 1e30]},
    {"optim.warmup_steps": 0},
], ids=str)
def test_validate_accepts_edge_values(changes):
    """Values at the boundary of what is allowed pass (n_tasks = C(n, k), k = n, alpha = 0, ...)."""
    cfg = tiny_config()
    for key, value in changes.items():
        cfg = _with(cfg, key, value)
    validate(cfg)


@pytest.mark.parametrize("bad", [-1, 2.5])
def test_validate_rejects_a_bad_subset_seed(bad):
    """task.subset_seed=-1 or 2.5 is a ConfigError naming the key and the value, like seed=-1."""
    with pytest.raises(ConfigError) as info:
        validate(_with(tiny_config(), "task.subset_seed", bad))
    assert "task.subset_seed" in str(info.value) and str(bad) in str(info.value)


def test_dict_configs_validate_too():
    """validate accepts the dict form of a config as well."""
    d = dataclasses.asdict(tiny_config())
    validate(d)
    d["model"]["width"] = 0
    with pytest.raises(ConfigError, match="model.width"):
        validate(d)


# --- Hydra composition -----------------------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _experiment_values(name: str) -> dict:
    """The values an experiment file sets (its `defaults` list picks groups; it is not a value)."""
    text = resources.files("toy_quanta.conf").joinpath("experiment", f"{name}.yaml").read_text()
    values = yaml.safe_load(text)
    values.pop("defaults", None)
    return _flatten(values)


def _same(composed, from_yaml) -> bool:
    # PyYAML reads 3e-3 as a string (YAML 1.1); Hydra (OmegaConf) reads it as a float
    if isinstance(composed, float) and isinstance(from_yaml, str):
        return math.isclose(composed, float(from_yaml))
    return composed == from_yaml


def test_default_config_is_the_demo_experiment_and_validates(hydra_compose):
    """The composed default job has every value conf/experiment/demo.yaml sets, and validates."""
    dcfg = hydra_compose()
    cfg = to_config(dcfg)
    validate(cfg)
    expected = _experiment_values("demo")
    assert len(expected) >= 5
    for key, value in expected.items():
        got = OmegaConf.select(dcfg, key)
        assert _same(got, value), f"{key}: composed {got!r}, demo.yaml {value!r}"


def test_paper_experiment_composes_with_the_paper_count(hydra_compose):
    """experiment=paper composes to the values of paper.yaml, validates, and has 603 * width + 2 params."""
    dcfg = hydra_compose(["experiment=paper"])
    cfg = to_config(dcfg)
    validate(cfg)
    for key, value in _experiment_values("paper").items():
        assert _same(OmegaConf.select(dcfg, key), value), key
    assert n_params(cfg.task.n_tasks, cfg.task.n, cfg.model.width, cfg.model.depth) == 603 * cfg.model.width + 2
    assert cfg.optim.name == "adam"  # chosen by the experiment's group override, as the paper trained
    assert to_config(hydra_compose(["experiment=paper", "optim=adamw"])).optim.name == "adamw"


def test_group_defaults_are_the_structured_defaults(hydra_compose):
    """Keys no experiment sets keep the dataclass defaults (e.g. model.depth, optim.b2)."""
    cfg = to_config(hydra_compose())
    assert cfg.model.depth == 1 and cfg.optim.b2 == 0.999 and cfg.task.D is None
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("optim", ["adam", "adamw", "sgd"])
def test_optimiser_group_options(hydra_compose, optim):
    cfg = to_config(hydra_compose([f"optim={optim}"]))
    assert cfg.optim.name == optim
    validate(cfg)


def test_overrides_reach_the_typed_config(hydra_compose):
    cfg = to_config(hydra_compose(["model.width=7", "task.D=100", "ensemble.lr=[0.1,0.2]", "optim.lr=5e-4"]))
    assert cfg.model.width == 7 and cfg.task.D == 100 and list(cfg.ensemble.lr) == [0.1, 0.2]
    assert cfg.optim.lr == 5e-4


def test_unknown_key_is_rejected_naming_it(hydra_compose):
    with pytest.raises(Exception) as info:
        hydra_compose(["model.widht=3"])
    assert "widht" in str(info.value)


@pytest.mark.parametrize("override,group", [("task=nope", "task"), ("model=nope", "model"), ("optim=nope", "optim"),
                                            ("optim=rmsprop", "optim")])
def test_unknown_group_option_is_rejected(hydra_compose, override, group):
    with pytest.raises(Exception) as info:
        hydra_compose([override])
    assert group in str(info.value) and override.split("=")[1] in str(info.value)


@pytest.mark.parametrize("override", ["optim.lr=abc", "train.steps=1.5", "model.width=wide"])
def test_mistyped_value_is_rejected(hydra_compose, override):
    with pytest.raises(Exception) as info:
        hydra_compose([override])
    assert override.split("=")[0] in str(info.value)


def test_composed_bad_value_fails_validation(hydra_compose):
    """A well-typed but disallowed value composes, then validate names it."""
    cfg = to_config(hydra_compose(["task.k=40"]))
    with pytest.raises(ConfigError, match=r"task\.k=40"):
        validate(cfg)


SCALING_EXPERIMENTS = ["quanta_params", "quanta_data", "quanta_steps", "quanta_alpha",
                       "quanta_params_paper", "quanta_data_paper", "quanta_steps_paper"]


def _sweep_jobs(dcfg) -> list[list[str]]:
    """The override lists of the multirun an experiment's hydra.sweeper.params asks for."""
    params = OmegaConf.select(dcfg, "hydra.sweeper.params") or {}
    jobs = [[]]
    for key, values in params.items():
        jobs = [[*job, f"{key}={v.strip()}"] for job in jobs for v in str(values).split(",")]
    return jobs


@pytest.mark.parametrize("name", SCALING_EXPERIMENTS)
def test_scaling_experiments_compose_and_every_job_validates(hydra_compose, name):
    """Each scaling experiment composes, and so does every job of its sweep; the CPU-scale sweeps
    span at least a decade of their quantity."""
    base = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)  # hydra_compose set Hydra up
    jobs = _sweep_jobs(base)
    cfgs = [to_config(hydra_compose([f"experiment={name}", *job])) for job in jobs]
    for cfg in cfgs:
        validate(cfg)
        assert cfg.name == name
    widths = {c.model.width for c in cfgs}
    sizes = {d for c in cfgs for d in (ensemble_list(c, "D") or ([c.task.D] if c.task.D else []))}
    if name in ("quanta_params", "quanta_params_paper"):
        assert max(widths) / min(widths) >= 10 and all(c.task.D is None for c in cfgs)
    if name in ("quanta_data", "quanta_data_paper"):
        assert max(sizes) / min(sizes) >= 10 and len(widths) == 1
    if name == "quanta_alpha":
        assert {a for c in cfgs for a in ensemble_list(c, "alpha")} >= {0.2, 0.4, 0.6, 0.8}
        assert max(widths) / min(widths) >= 10 and max(sizes) / min(sizes) >= 10
    if name.endswith("_paper"):
        assert (cfgs[0].task.n_tasks, cfgs[0].task.n, cfgs[0].task.k, cfgs[0].task.alpha) == (500, 100, 3, 0.4)
        assert cfgs[0].train.batch_size == 20_000 and cfgs[0].train.steps == 200_000


def test_qdg_model_experiment_composes(hydra_compose):
    cfg = to_config(hydra_compose(["experiment=qdg_model"]))
    validate(cfg)
    assert (cfg.model.width, cfg.task.n_tasks, cfg.ensemble.seeds) == (500, 64, 1)


def test_qdg_config_composes_with_its_defaults_and_rejects_typos(hydra_compose):
    """`toy-quanta-qdg`'s primary config: the paper's defaults, validated; unknown keys fail."""
    cfg = OmegaConf.to_object(compose("qdg", overrides=["run_dir=/somewhere", "n_clusters=20"]))
    assert isinstance(cfg, QDGConfig) and cfg.n_clusters == 20 and cfg.run_dir == "/somewhere"
    assert (cfg.gradient, cfg.affinity, cfg.params, cfg.n_init) == ("loss", "angular", ["bits", "hidden", "out"], 30)
    validate_qdg(cfg)
    with pytest.raises(Exception, match="n_cluster"):
        compose("qdg", overrides=["run_dir=/x", "n_cluster=20"])


@pytest.mark.parametrize("key,value,allowed", [
    ("gradient", "hessian", "one of loss, margin"),
    ("params", ["bits", "bits"], "distinct names"),
    ("envelope_counts", [1], "integers >= 2"),
    ("loss_threshold_bits", -1.0, "positive"),
    ("n_clusters", 20_000, None),
])
def test_qdg_config_validation_names_the_key(key, value, allowed):
    cfg = dataclasses.replace(QDGConfig(run_dir="/x"), **{key: value})
    with pytest.raises(ConfigError) as info:
        validate_qdg(cfg)
    assert info.value.key in (key, "n_samples") and (allowed is None or allowed in str(info.value))


def test_grok_modadd_composes_as_modular_arithmetic(hydra_compose):
    cfg = to_config(hydra_compose(["experiment=grok_modadd"]))
    validate(cfg)
    assert (cfg.task.name, cfg.model.name, cfg.optim.name) == ("modular", "embed_mlp", "adamw")
    assert (cfg.task.p, cfg.task.op, cfg.task.full_batch, cfg.optim.b2) == (53, "add", True, 0.98)


@pytest.mark.parametrize("overrides,key,allowed", [
    (["task.op=div", "task.p=51"], "task.p", "prime"),
    (["task.train_fraction=1.0"], "task.train_fraction", "(0, 1)"),
    (["task.op=pow"], "task.op", "add"),
    (["ensemble.train_fraction=[0.3,1.5]"], "ensemble.train_fraction", "(0, 1)"),
    (["ensemble.train_fraction=[]"], "ensemble.train_fraction", "non-empty"),
    (["ensemble.alpha=[0.4]"], "ensemble.alpha", "sparse parity"),
    (["model.combine=product"], "model.combine", "sum"),
])
def test_modular_settings_are_checked_before_anything_runs(hydra_compose, overrides, key, allowed):
    cfg = to_config(hydra_compose(["experiment=grok_modadd", *overrides]))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key and allowed in str(info.value), str(info.value)


def test_each_task_takes_its_own_models(hydra_compose):
    from toy_quanta.models.mlp import MLPConfig
    from toy_quanta.models.transformer import TransformerConfig

    grok = to_config(hydra_compose(["experiment=grok_modadd"]))
    with pytest.raises(ConfigError, match="a model for task modular: one of transformer, embed_mlp"):
        validate(dataclasses.replace(grok, model=MLPConfig()))
    validate(dataclasses.replace(grok, model=TransformerConfig(n_layers=1, d_model=32, n_heads=4, d_mlp=64)))
    with pytest.raises(ConfigError) as info:
        validate(dataclasses.replace(grok, model=TransformerConfig(d_model=30, n_heads=4)))
    assert info.value.key == "model.n_heads" and "divisor of model.d_model=30" in str(info.value)


def test_sparse_parity_rejects_a_modular_model_and_training_fractions(hydra_compose):
    with pytest.raises(ConfigError, match="a model for task sparse_parity"):
        validate(to_config(hydra_compose(["model=embed_mlp"])))
    with pytest.raises(ConfigError, match="ensemble.train_fraction"):
        validate(to_config(hydra_compose(["ensemble.train_fraction=[0.5]"])))


def test_omnigrok_mnist_composes_as_the_paper_setting(hydra_compose):
    cfg = to_config(hydra_compose(["experiment=omnigrok_mnist"]))
    validate(cfg)
    t, m, o = cfg.task, cfg.model, cfg.optim
    assert (t.name, t.source, t.n_train, t.loss, m.name, m.width, m.depth, m.activation) == (
        "mnist", "embedded", 1000, "mse", "dense_mlp", 200, 2, "relu")
    assert (o.name, o.lr, o.weight_decay, cfg.train.batch_size, cfg.train.steps) == ("adamw", 1e-3, 0.01, 200, 100_000)
    assert list(cfg.ensemble.init_scale) == [1.0, 8.0]


@pytest.mark.parametrize("overrides,key,allowed", [
    (["task.n_train=5000"], "task.n_train", "1..4999"),
    (["task.n_train=0"], "task.n_train", "integer >= 1"),
    (["task.source=/nonexistent/mnist"], "task.source", "does not exist"),
    (["task.loss=l1"], "task.loss", "mse, cross_entropy"),
    (["ensemble.train_fraction=[0.5]"], "ensemble.train_fraction", "task=mnist"),
    (["model.width=0"], "model.width", "integer >= 1"),
])
def test_mnist_settings_are_checked_before_anything_runs(hydra_compose, overrides, key, allowed):
    cfg = to_config(hydra_compose(["experiment=omnigrok_mnist", *overrides]))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key and allowed in str(info.value), str(info.value)


def test_a_directory_without_the_idx_files_is_named(hydra_compose, tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    cfg = to_config(hydra_compose(["experiment=omnigrok_mnist", f"task.source={tmp_path}"]))
    with pytest.raises(ConfigError, match="lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte"):
        validate(cfg)


# --- the settings of fixed norms, the embedding's own optimiser, task=symbol_add,
# task=teacher_student and the phase diagram: every error names the key, the value and what is allowed



@pytest.mark.parametrize("make", [symbol_add, teacher, grid, sparse_parity])
def test_the_base_configs_are_valid(make):
    validate(make())


@pytest.mark.parametrize("cfg", [
    with_values(teacher(), optim__fixed_norm=12.5),
    with_values(teacher(), ensemble__fixed_norm=[1.0, 2.0, 3.0]),
    with_values(symbol_add(), ensemble__fixed_norm=[0.5, 8.0]),
    Config(task=MNISTConfig(), model=DenseMLPConfig(), optim=OptimConfig(fixed_norm=30.0)),
    Config(task=ModularConfig(p=11, op="add"), model=TransformerConfig(), optim=OptimConfig(embed_lr=1e-2,
                                                                                          fixed_norm=4.0)),
    with_values(symbol_add(), task__p=2, task__train_fraction=0.5),  # 3 pairs: 2 train, 1 validates
    with_values(symbol_add(), task__train_fraction=0.99),  # round(54.45) = 54 of 55: one validates
    with_values(teacher(), task__teacher_depth=0, task__teacher_activation="gelu"),
    with_values(grid(), phase__x="optim.weight_decay", phase__y="optim.lr", phase__threshold=1.0, phase__gap_steps=0),
], ids=lambda c: c.task.name)
def test_new_settings_that_are_allowed(cfg):
    validate(cfg)


# (base config, {key: value}, the key the error names, text of what is allowed)
BAD_SETTINGS = [
    (teacher, {"optim.fixed_norm": 0.0}, "optim.fixed_norm", "positive"),
    (teacher, {"optim.fixed_norm": -3.0}, "optim.fixed_norm", "positive"),
    (symbol_add, {"optim.fixed_norm": float("nan")}, "optim.fixed_norm", "positive"),
    (teacher, {"ensemble.fixed_norm": [5.0, 0.0]}, "ensemble.fixed_norm", "positive"),
    (symbol_add, {"ensemble.fixed_norm": [-1.0, 2.0]}, "ensemble.fixed_norm", "positive"),
    (teacher, {"optim.embed_lr": 1e-3}, "optim.embed_lr", "model=dense_mlp"),
    (teacher, {"optim.embed_weight_decay": 0.1}, "optim.embed_weight_decay", "model=dense_mlp"),
    (sparse_parity, {"optim.embed_lr": 1e-3}, "optim.embed_lr", "model=mlp"),
    (symbol_add, {"optim.embed_lr": 0.0}, "optim.embed_lr", "positive"),
    (symbol_add, {"task.p": 1}, "task.p", "[2, "),
    (symbol_add, {"task.p": 0}, "task.p", "[2, "),
    (symbol_add, {"task.train_fraction": 0.0}, "task.train_fraction", "(0, 1)"),
    (symbol_add, {"task.train_fraction": 1.0}, "task.train_fraction", "(0, 1)"),
    # round(0.995 * 55) = 55: no validation pair; round(0.005 * 55) = 0: no training pair
    (symbol_add, {"task.train_fraction": 0.995}, "task.train_fraction", "one for validation"),
    (symbol_add, {"task.train_fraction": 0.005}, "task.train_fraction", "at least one of the 55 pairs for training"),
    (symbol_add, {"task.p": 2, "task.train_fraction": 0.9}, "task.train_fraction", "3 pairs"),
    (symbol_add, {"ensemble.train_fraction": [0.5, 0.995]}, "ensemble.train_fraction", "one for validation"),
    (teacher, {"task.n_train": 0}, "task.n_train", "integer >= 1"),
    (teacher, {"task.teacher_activation": "swish"}, "task.teacher_activation", "tanh"),
    (teacher, {"task.tolerance": 0.0}, "task.tolerance", "positive"),
    (teacher, {"task.tolerance": -0.5}, "task.tolerance", "positive"),
    (grid, {"phase.y": None}, "phase.y", "phase.x"),  # phase.x without phase.y
    (grid, {"phase.x": "task.p"}, "phase.x", "optim.lr"),  # not a grid axis at all
    (grid, {"phase.x": "model.width"}, "phase.x", "optim.weight_decay"),
    (grid, {"ensemble.lr": None}, "phase.x", "ensemble.lr"),  # phase.x=optim.lr, but lr is not swept
    (grid, {"phase.threshold": 1.5}, "phase.threshold", "(0, 1]"),
    (grid, {"phase.threshold": 0.0}, "phase.threshold", "positive"),
    (grid, {"phase.gap_steps": -1}, "phase.gap_steps", ">= 0"),
]


def _bad_config(make, values) -> Config:
    return with_values(make(), **{k.replace(".", "__"): v for k, v in values.items()})


def _id(case) -> str:
    return ",".join(f"{k}={v}" for k, v in case[1].items())


@pytest.mark.parametrize("make,values,key,allowed", BAD_SETTINGS, ids=[_id(c) for c in BAD_SETTINGS])
def test_a_bad_value_names_key_value_and_what_is_allowed(make, values, key, allowed):
    with pytest.raises(ConfigError) as info:
        validate(_bad_config(make, values))
    exc = info.value
    assert exc.key == key, str(exc)
    message = str(exc)
    assert message.startswith(f"{key}=") and "is not allowed" in message
    if key in values:
        value = values[key]
        if isinstance(value, list):  # the list, or its offending entry
            assert exc.value == value or exc.value in value, message
        else:
            assert exc.value == value or (value != value and exc.value != exc.value)  # nan
        assert repr(exc.value) in message
    assert allowed in exc.allowed, message


@pytest.mark.parametrize("experiment", ["effective_toy", "phase_toy", "lu_modadd", "lu_mnist",
                                        "omnigrok_teacher_student"])
def test_the_new_experiments_compose_to_valid_configs(hydra_compose, experiment):
    cfg = to_config(hydra_compose([f"experiment={experiment}"]))
    validate(cfg)
    assert cfg.name == experiment
    if experiment.startswith("lu_"):
        assert len(cfg.ensemble.fixed_norm) >= 3 and cfg.optim.weight_decay == 0.0
    if experiment == "phase_toy":
        assert (cfg.phase.x, cfg.phase.y) == ("optim.lr", "optim.weight_decay")
    if experiment in ("effective_toy", "phase_toy"):
        assert cfg.optim.embed_lr is not None and cfg.model.d_embed == 1


ALL_EXPERIMENTS = sorted(p.name.removesuffix(".yaml") for p in resources.files("toy_quanta.conf").joinpath("experiment").iterdir()
                         if p.name.endswith(".yaml"))


@pytest.mark.parametrize("name", ALL_EXPERIMENTS)
def test_every_experiment_composes_and_validates(hydra_compose, name):
    validate(to_config(hydra_compose([f"experiment={name}"])))


def test_arms_replace_and_extend_from_the_command_line(hydra_compose):
    """An experiment's arms: `ensemble.arms=null ensemble.arms={...}` replaces them, and
    `+ensemble.arms.NAME={...}` adds one; dotted and nested keys are the same."""
    from toy_quanta.engine.members import expand

    replaced = to_config(hydra_compose(["experiment=grokfast", "ensemble.arms=null",
                                        "ensemble.arms={a: {}, b: {optim: {grokfast: ema}}}"]))
    validate(replaced)
    assert [(m["arm"], m["optim.grokfast"]) for m in expand(replaced)] == [("a", "none")] * 3 + [("b", "ema")] * 3
    added = to_config(hydra_compose(["experiment=grokfast", "+ensemble.arms.c={optim.grokfast_lambda: 9}"]))
    assert list(added.ensemble.arms)[-1] == "c" and expand(added)[-1]["optim.grokfast_lambda"] == 9.0


@pytest.mark.parametrize("arms, key, allowed", [
    ({"a": {"optim.b2": 0.9}}, "ensemble.arms.a.optim.b2", "per-member key"),
    ({"a": {"optim.grokfast": "emma"}}, "ensemble.arms.a.optim.grokfast", "one of none, ema, ma"),
    ({"a": {"optim.weight_decay": -1.0}}, "ensemble.arms.a.optim.weight_decay", ">= 0"),
    ({"a": {"optim.lr": 0.1}}, "ensemble.arms.a.optim.lr", "not both"),
    ({"a": 3}, "ensemble.arms.a", "mapping"),
    ([1, 2], "ensemble.arms", "mapping"),
    ({"wd_0.01": {}}, "ensemble.arms", "arm names without"),
])
def test_bad_arms_are_refused_naming_the_arm_and_key(arms, key, allowed):
    cfg = tiny_config(ensemble={"arms": arms, "lr": [0.1, 0.2]})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key and allowed in info.value.allowed


@pytest.mark.parametrize("levels", [[], [0.9, 1.5], [0.0], ["0.9"], 0.9, [float("nan")]])
def test_bad_arms_levels_are_refused(levels):
    with pytest.raises(ConfigError) as info:
        validate(tiny_config(ensemble={"arms_levels": levels}))
    assert info.value.key == "ensemble.arms_levels" and "(0, 1]" in info.value.allowed


@pytest.mark.parametrize("optim, ensemble, key", [
    ({"grokfast": "fast"}, {}, "optim.grokfast"),
    ({"grokfast_alpha": 1.0}, {}, "optim.grokfast_alpha"),
    ({"grokfast_lambda": -1.0}, {}, "optim.grokfast_lambda"),
    ({"grokfast_window": 0}, {}, "optim.grokfast_window"),
    ({}, {"grokfast": ["ema", "emma"]}, "ensemble.grokfast"),
    ({}, {"grokfast": "ema"}, "ensemble.grokfast"),
    ({}, {"grokfast_alpha": [0.5, 1.5]}, "ensemble.grokfast_alpha"),
    ({"orthogonal": "yes"}, {}, "optim.orthogonal"),
])
def test_bad_grad_transform_values_are_refused(optim, ensemble, key):
    with pytest.raises(ConfigError) as info:
        validate(tiny_config(optim=optim, ensemble=ensemble))
    assert info.value.key == key


@pytest.mark.parametrize("overrides, name, values", [
    (["ensemble.alpha=[0.2,0.6]"], "alpha", [0.2, 0.6]),  # the old name, no `+`
    (["+ensemble.alpha=[0.2]"], "alpha", [0.2]),
    (["experiment=quanta_data"], "D", None),  # an experiment file's ensemble.D
    (["experiment=quanta_data", "ensemble.D=[100,300]"], "D", [100, 300]),
    (["experiment=grok_modadd", "ensemble.train_fraction=[0.3,0.5]"], "train_fraction", [0.3, 0.5]),
])
def test_a_tasks_own_lists_keep_their_old_names(hydra_compose, overrides, name, values):
    """ensemble.alpha, ensemble.D and ensemble.train_fraction are no EnsembleConfig fields any more:
    given as before (command line, experiment file), they land in ensemble.lists and make members."""
    cfg = to_config(hydra_compose(overrides))
    validate(cfg)
    got = cfg.ensemble.lists[name]
    assert got == (values if values is not None else _experiment_values("quanta_data")[f"ensemble.{name}"])
    key = next(k for k, (n, _) in registry.task(cfg.task.name).member_keys.items() if n == name)
    assert sorted({m[key] for m in expand(cfg)}) == sorted(got)


def test_a_list_another_task_owns_is_refused_naming_the_owner(hydra_compose):
    cfg = to_config(hydra_compose(["experiment=grok_modadd", "ensemble.alpha=[0.2]"]))
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    assert exc.value.key == "ensemble.alpha" and "it belongs to sparse parity" in exc.value.allowed
