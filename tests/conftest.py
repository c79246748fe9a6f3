"""Shared tiny configs and the real multirun sweeps (run once per session, in subprocesses)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The fast suite is compile-bound: over a thousand tiny programs, each run for a few steps. At XLA's
# backend optimisation level 0 (LLVM without its optimisation passes) they compile in about half
# the time and compute the same functions (no fast-math at either level); they only run slower,
# which matters for the long runs of `pytest -m slow`, left at the default level. Set before JAX
# starts its backend; subprocesses (the app, notebook kernels) inherit it.
if not any(arg.startswith("-m") for arg in sys.argv[1:]) and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import toy_quanta.cli.app  # noqa: E402, F401  (registers the tasks, the models and the Hydra configs)
from toy_quanta.config import Config, EnsembleConfig, OptimConfig, PhaseConfig, TrainConfig
from toy_quanta.models.dense_mlp import DenseMLPConfig
from toy_quanta.models.embed_mlp import EmbedMLPConfig
from toy_quanta.models.mlp import MLPConfig
from toy_quanta.tasks.sparse_parity import SparseParityConfig
from toy_quanta.tasks.symbol_add import SymbolAddConfig
from toy_quanta.tasks.teacher_student import TeacherStudentConfig

# Everything small enough that one compile + run takes a few seconds on 2 CPU cores.
TINY_TASK = dict(n_tasks=4, n=8, k=3, alpha=0.4, test_size=256, per_task_test=16)
TINY_MODEL = dict(width=16, depth=1)
TINY_OPTIM = dict(name="adam", lr=1e-2)
TINY_TRAIN = dict(steps=60, batch_size=64, log_every=20, progress=False)


def tiny_config(task=None, model=None, optim=None, train=None, ensemble=None, seed=0, name="tiny") -> Config:
    """A valid, tiny Config; each argument is a dict of keys overriding the tiny defaults."""
    return Config(
        task=SparseParityConfig(**{**TINY_TASK, **(task or {})}),
        model=MLPConfig(**{**TINY_MODEL, **(model or {})}),
        optim=OptimConfig(**{**TINY_OPTIM, **(optim or {})}),
        train=TrainConfig(**{**TINY_TRAIN, **(train or {})}),
        ensemble=_ensemble(ensemble or {}),
        seed=seed,
        name=name,
    )


def _ensemble(values: dict) -> EnsembleConfig:
    """EnsembleConfig of the given lists; a task's own (alpha, D) goes to `lists`, as the command
    line's ensemble.alpha=[...] does (job.to_config)."""
    fields = {f.name for f in dataclasses.fields(EnsembleConfig)}
    own = {k: v for k, v in values.items() if k not in fields}
    return EnsembleConfig(**{k: v for k, v in values.items() if k in fields}, **({"lists": own} if own else {}))


def full_batch_train(loss, tx, params, steps: int):
    """`steps` plain optax steps on loss(params), compiled as one scan: the final parameters."""
    import jax
    import optax

    def step(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps))(params)
    return params


def member(seed=0, alpha=0.4, init_scale=1.0, lr=1e-2, weight_decay=0.0, D=None) -> dict:
    """One member dict as members.expand makes them."""
    return {"seed": seed, "task.alpha": alpha, "task.D": D, "task.train_fraction": None, "model.init_scale": init_scale,
            "optim.lr": lr, "optim.weight_decay": weight_decay, "optim.fixed_norm": None, "optim.grokfast": "none",
            "optim.grokfast_alpha": 0.98, "optim.grokfast_lambda": 2.0, "optim.eps": 1e-8, "model.output_scale": 1.0}


# ---------------------------------------------------------------------------------------------
# Real multiruns of the console app, shared by test_app.py and test_collect.py.

SWEEP_OVERRIDES = [
    "task.n_tasks=4", "task.n=8", "task.k=3", "task.test_size=128", "task.per_task_test=8",
    "model.width=8", "optim.lr=0.01", "train.steps=40", "train.batch_size=32", "train.log_every=20",
    "train.progress=false", "name=sweeptest",
]


def run_app(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "-m", "toy_quanta.cli.app", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def _multirun(tmp_path_factory, name: str, extra: list[str], sweep: list[str], expect_failure: str | None = None) -> Path:
    """Run the app's multirun in a subprocess; returns the sweep directory. With expect_failure, one
    job is invalid: the sweep must still run every job and then exit non-zero naming the error."""
    root = tmp_path_factory.mktemp(name)
    sweep_dir = root / "sweep"
    swept = {o.split("=")[0] for o in [*sweep, *extra]}
    base = [o for o in SWEEP_OVERRIDES if o.split("=")[0] not in swept]
    proc = run_app(["-m", *sweep, *base, *extra, f"hydra.sweep.dir={sweep_dir}"], cwd=root)
    report = f"STDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}"
    if expect_failure is None:
        assert proc.returncode == 0, f"multirun failed:\n{report}"
    else:
        assert proc.returncode != 0 and expect_failure in proc.stderr, f"expected a failed job:\n{report}"
    return sweep_dir


# The app's multiruns that several test modules read, each run once per session in the background
# pool (started with the session when a selected test asks for it; see _background_runs).
SESSION = "<session>"  # their key in _background_runs
SESSION_SWEEPS = {
    # seed=0,1 with Hydra's basic launcher: two jobs one after another
    "basic_sweep": lambda tmp: _multirun(tmp, "basic", [], ["seed=0,1"]),
    # the same seed=0,1 sweep with hydra/launcher=vmap: one group of two members
    "vmap_sweep": lambda tmp: _multirun(tmp, "vmap", ["hydra/launcher=vmap"], ["seed=0,1"]),
    # a vmap sweep over a shape key, model.width=8,16,0: two groups of valid jobs (0, 1), and an
    # invalid job (2, width 0) that fails on its own
    "vmap_width_sweep": lambda tmp: _multirun(tmp, "vmapwidth", ["hydra/launcher=vmap"], ["model.width=8,16,0"],
                                              expect_failure="model.width=0"),
}


@pytest.fixture(scope="session")
def basic_sweep(_background_runs) -> Path:
    return _background_runs[SESSION]["basic_sweep"].result()


@pytest.fixture(scope="session")
def vmap_sweep(_background_runs) -> Path:
    return _background_runs[SESSION]["vmap_sweep"].result()


@pytest.fixture(scope="session")
def vmap_width_sweep(_background_runs) -> Path:
    return _background_runs[SESSION]["vmap_width_sweep"].result()


def read_summary(job_dir: Path) -> dict:
    return json.loads((job_dir / "summary.json").read_text())


# ---------------------------------------------------------------------------------------------
# Independent subprocess runs (the app, its analyses), run in the background. Each run is mostly
# single-threaded (Python start-up, Hydra, XLA compiles), so runs side by side, and beside the
# in-process tests, nearly halve their wall time on 2 cores. Every run and every check stays what
# it was; only when a run happens changes.

PARALLEL_RUNS = min(4, max(2, os.cpu_count() or 1))


class _RunPool:
    """A thread pool whose jobs wait while it is held quiet (see quiet_background)."""

    def __init__(self, workers: int):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runs")
        self._cond = threading.Condition()
        self._open, self._running = True, 0

    def _gated(self, job):
        with self._cond:
            self._cond.wait_for(lambda: self._open)
            self._running += 1
        try:
            return job()
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def submit(self, job):
        return self._pool.submit(self._gated, job)

    def hold_quiet(self) -> None:
        """Start no new job, and wait for the running ones to finish."""
        with self._cond:
            self._open = False
            self._cond.wait_for(lambda: self._running == 0)

    def release(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def shutdown(self) -> None:
        self.release()
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def run_pool():
    """The session's pool for subprocess runs (its threads only wait on them): submit(job) -> future."""
    pool = _RunPool(PARALLEL_RUNS)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _background_runs(request, run_pool, tmp_path_factory) -> dict:
    """At the start of the session: the SESSION_SWEEPS that selected tests ask for, then every
    test module's runs (a module with a function background_runs(items, tmp_path_factory) ->
    {name: job}) are started in run_pool, modules in run order; `items` are the module's selected
    tests, so only runs they need start. {module name or SESSION: {name: future}}."""
    tmp_path_factory.getbasetemp()  # made here, not by two threads at once
    items_of: dict = {}
    for item in request.session.items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "background_runs"):
            items_of.setdefault(module, []).append(item)
    used = {name for item in request.session.items for name in getattr(item, "fixturenames", ()) if name in SESSION_SWEEPS}
    runs = {SESSION: {name: run_pool.submit(lambda name=name: SESSION_SWEEPS[name](tmp_path_factory))
                      for name in SESSION_SWEEPS if name in used}}
    runs.update({module.__name__: {name: run_pool.submit(job)
                                   for name, job in module.background_runs(items, tmp_path_factory).items()}
                 for module, items in items_of.items()})
    return runs


@pytest.fixture
def quiet_background(run_pool):
    """For tests that time things (the benchmark's figures are differences of timings, which other
    work on the machine can turn negative): no background run goes on during the test."""
    run_pool.hold_quiet()
    yield
    run_pool.release()


@pytest.fixture(scope="module")
def background(request, _background_runs) -> dict:
    """name -> future of the requesting module's background runs (see _background_runs)."""
    return _background_runs.get(request.module.__name__, {})


@pytest.fixture(scope="module")
def selected_tests(request) -> list:
    """The requesting module's selected test items, in run order."""
    return [item for item in request.session.items if getattr(item, "module", None) is request.module]


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """In-process runs share one persistent compilation cache for the session (as a sweep's jobs
    do): a program compiled once (the same shapes in another test) loads in a fraction of the time."""
    from toy_quanta import compilation_cache

    compilation_cache.enable(str(tmp_path_factory.mktemp("xla_cache")))


# ---------------------------------------------------------------------------------------------
# Small valid configs of the other tasks, for the checks of every setting (test_config, test_job).

def symbol_add() -> Config:
    return Config(task=SymbolAddConfig(p=10), model=EmbedMLPConfig(d_embed=1, width=16, depth=2, activation="tanh"),
                  optim=OptimConfig(name="adamw", lr=1e-4, embed_lr=1e-3, embed_weight_decay=0.0),
                  train=TrainConfig(steps=10, log_every=5, progress=False), ensemble=EnsembleConfig())


def teacher() -> Config:
    return Config(task=TeacherStudentConfig(), model=DenseMLPConfig(width=16), optim=OptimConfig(name="adamw"),
                  train=TrainConfig(steps=10, log_every=5, progress=False), ensemble=EnsembleConfig())


def grid() -> Config:
    """symbol_add over a 2 x 2 grid of lr x weight decay, with a phase diagram."""
    cfg = symbol_add()
    cfg.ensemble = EnsembleConfig(lr=[1e-4, 1e-3], weight_decay=[0.0, 1.0])
    cfg.phase = PhaseConfig(x="optim.lr", y="optim.weight_decay")
    return cfg


def sparse_parity() -> Config:
    return tiny_config()


def with_values(cfg: Config, **values) -> Config:
    """A copy of cfg with dotted keys (given with "__" for ".") set."""
    nodes = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
    cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name)) for name in nodes})
    for dotted, value in values.items():
        *parents, leaf = dotted.split("__")
        if parents == ["ensemble"] and leaf not in {f.name for f in dataclasses.fields(EnsembleConfig)}:
            cfg.ensemble.lists = {**(cfg.ensemble.lists or {}), leaf: value}  # a task's own list
            continue
        node = cfg
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


def dot_flops(jaxpr) -> int:
    """2 x multiply-adds of every dot_general in a jaxpr, sub-jaxprs (jit, custom_jvp, ...) included."""
    import math

    import jax.extend

    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract_lhs, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            total += 2 * math.prod(lhs_shape[d] for d in contract_lhs) * math.prod(eqn.outvars[0].aval.shape)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += dot_flops(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += dot_flops(sub)
    return total


@pytest.fixture(scope="module")
def hydra_compose():
    """compose(overrides) -> the app's composed config (toy_quanta.conf), as `toy-quanta` would."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="toy_quanta.conf", version_base=None):
        yield lambda overrides=(): compose("config", overrides=list(overrides))
