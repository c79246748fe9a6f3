"""`python -m toy_quanta.bench`: training throughput, measured side by side in one run.

1. The paper's setting (n_tasks 500, n 100, k 3, alpha 0.4, width 128, batch 20,000, online):
   steps/s and useful GFLOP/s of one member, against this machine's matrix-product GFLOP/s,
   the two measured in alternation over several rounds (medians, and the range of the ratio).
2. A small setting (width 16, batch 64): model-steps/s of a 64-member vmapped ensemble, against
   the same 64 members run one after another through the engine, and against a plain Python
   loop that calls a jitted training step once per step.
3. Power et al.'s grokking setting (conf/experiment/grok_power.yaml: x/y mod 97, 2-layer
   transformer, width 128, batch 512): steps/s and useful GFLOP/s of one model, against the matrix
   product in alternation as in 1., and model-steps/s of an 8-seed ensemble against the same 8
   members run one after another.
4. A sweep (`toy-quanta -m seed=range(0,N) task.n_tasks=4 task.n=8 train.steps=200`, as a user
   types it) through the vmap launcher and through the basic one: wall time, training and
   compile time, and the rest (start-up, composing, writing every job) per job; then
   toy-quanta-collect on the vmap sweep. What a thousand-point sweep costs beyond its compute.
`--only` picks sections (paper, small, grok, sweep; default all). Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from omegaconf import OmegaConf

from toy_quanta import api
from toy_quanta.config import Config, OptimConfig, TrainConfig, validate
from toy_quanta.models.mlp import MLPConfig
from toy_quanta.tasks.sparse_parity import SparseParityConfig
from toy_quanta.data import sparse_parity as sp
from toy_quanta.data.modular import SEQ_LEN
from toy_quanta.engine.loop import make_trainer, over_members, trainer_inputs
from toy_quanta.engine.members import expand
from toy_quanta.engine.optim import make_optimizer
from toy_quanta.engine.train import make_model
from toy_quanta.models.mlp import train_flops_per_sample
from toy_quanta.models.transformer import train_flops_per_sequence
from toy_quanta.results import device_info

SECTIONS = ("paper", "small", "grok", "sweep")
SWEEP = ["task.n_tasks=4", "task.n=8", "train.progress=false"]  # the sweep section's grid point, with seed and steps


def _best_time(fn: Callable[[], Any], repeats: int, warm_up: bool = True) -> float:
    """Fastest of `repeats` timed calls (after one warm-up): the least disturbed by other load."""
    if warm_up:
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """float32 matrix-product GFLOP/s of this device (size x size by size x size)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * size**3 / _best_time(lambda: f(a, b), repeats) / 1e9


def _config(n_tasks: int, n: int, width: int, batch: int, steps: int) -> Config:
    # Tiny evaluation sets: the benchmark measures training steps, not evaluation.
    return Config(
        task=SparseParityConfig(n_tasks=n_tasks, n=n, k=3, alpha=0.4, test_size=256, per_task_test=1),
        model=MLPConfig(width=width),
        optim=OptimConfig(name="adam", lr=1e-3),
        train=TrainConfig(steps=steps, batch_size=batch, progress=False),
    )


def _members(cfg: Config, n_members: int) -> list[dict]:
    """n_members copies of the config's member with seeds 0..n_members-1."""
    (base,) = expand(cfg)
    return [{**base, "seed": s} for s in range(n_members)]


def _engine(cfg: Config) -> tuple[Any, Callable[[list[dict]], tuple]]:
    """The engine's per-member trainer for the config's task, and members -> the trainer's stacked
    inputs (hyperparameters, task data), as engine.loop.fit prepares them."""
    trainer = make_trainer(cfg, expand(cfg))
    return trainer, lambda members: trainer_inputs(cfg, trainer, members)


def _engine_chunk(cfg: Config, n_members: int, steps: int) -> Callable[[], Any]:
    """A call that runs `steps` steps of one vmapped program of n_members members (compiled once)."""
    members = _members(cfg, n_members)
    trainer, inputs = _engine(cfg)
    state, data = jax.jit(over_members(trainer.init))(*inputs(members))
    chunk = jax.jit(over_members(trainer.chunk, in_axes=(0, 0, None)))
    n = np.int32(steps)
    return lambda: chunk(state, data, n)


def engine_steps_per_s(cfg: Config, n_members: int, steps: int, repeats: int) -> float:
    """Steps/s of one vmapped program of n_members members, through the engine's compiled chunk."""
    return steps / _best_time(_engine_chunk(cfg, n_members, steps), repeats)


def side_by_side(cfg: Config, steps: int, rounds: int,
                 run_chunk: Callable[[], Any] | None = None) -> list[tuple[float, float]]:
    """[(steps/s of one member, matrix-product GFLOP/s)] measured in alternation, round after
    round: on a shared machine both figures drift by tens of percent within a minute, so each
    ratio is taken from measurements seconds apart. `run_chunk`: a ready call of `steps` steps
    (default: one member of cfg through the engine)."""
    run_chunk = run_chunk or _engine_chunk(cfg, 1, steps)
    pairs = []
    for _ in range(rounds):
        sps = steps / _best_time(run_chunk, 2)
        pairs.append((sps, matmul_gflops(repeats=3)))
    return pairs


def sequential_steps_per_s(cfg: Config, n_members: int, steps: int) -> float:
    """Model-steps/s of n_members single-member runs, one after another (one compile shared)."""
    trainer, inputs = _engine(cfg)
    init = jax.jit(over_members(trainer.init))
    chunk = jax.jit(over_members(trainer.chunk, in_axes=(0, 0, None)))
    n = np.int32(steps)
    runs = [init(*inputs([m])) for m in _members(cfg, n_members)]
    jax.block_until_ready(chunk(*runs[0], n))  # compile
    t0 = time.perf_counter()
    for state, data in runs:
        jax.block_until_ready(chunk(state, data, n))
    return n_members * steps / (time.perf_counter() - t0)


def plain_loop_steps_per_s(cfg: Config, steps: int) -> float:
    """Steps/s of the usual pattern: a jitted step called from Python once per step."""
    t = cfg.task
    subsets = jnp.asarray(sp.draw_subsets(t.n_tasks, t.n, t.k, 0))
    graphdef, params = nnx.split(make_model(cfg, jax.random.key(0)))
    tx = make_optimizer(cfg.optim, cfg.optim.lr, cfg.optim.weight_decay, cfg.train.steps)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        task_B, bits_BxI, label_B = sp.sample(key, subsets, t.alpha, cfg.train.batch_size, t.n)

        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(task_B, bits_BxI)
            return optax.softmax_cross_entropy_with_integer_labels(logits, label_B).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.key(1)
    params, opt_state, _ = step(params, opt_state, key)  # compile
    jax.block_until_ready(params)
    t0 = time.perf_counter()
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
    jax.block_until_ready(params)
    return steps / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Power et al.'s grokking setting


def grok_config(steps: int, overrides: Sequence[str] = ()) -> Config:
    """conf/experiment/grok_power.yaml composed by Hydra as `toy-quanta experiment=grok_power`
    composes it, with train.steps set to `steps` (plus any further overrides), then validated."""
    cfg = OmegaConf.to_object(api.compose("experiment=grok_power", f"train.steps={steps}", "train.progress=false",
                                          *overrides))
    validate(cfg)
    return cfg


def grok_flops_per_step(cfg: Config) -> int:
    """Useful training FLOPs of one step of one member: train_flops_per_sequence x batch size."""
    m = cfg.model
    return train_flops_per_sequence(SEQ_LEN, m.n_layers, m.d_model, m.d_mlp, cfg.task.p) * cfg.train.batch_size


def _train_and_eval_seconds(chunk: Callable, state: Any, data: Any, steps: int) -> tuple[float, float]:
    """(seconds of `steps` training steps, seconds of the evaluation) in a compiled, warmed-up
    chunk: one `steps`-step call less one 0-step call on the same state, which does only what
    every chunk ends with (the evaluation of the whole p^2 table) and the call's overhead."""
    # Best of 3 each: on a loaded machine one slow evaluation call could exceed the full call.
    full = _best_time(lambda: chunk(state, data, np.int32(steps)), 3, warm_up=False)
    evaluation = _best_time(lambda: chunk(state, data, np.int32(0)), 3, warm_up=False)
    if full <= evaluation:
        raise RuntimeError(f"timing noise swamped the measurement ({steps} steps took {full:.4f} s, evaluation alone "
                           f"{evaluation:.4f} s): run the benchmark on a quieter machine")
    return full - evaluation, evaluation


def grok_section(steps: int = 200, ensemble_steps: int = 30, n_members: int = 8, rounds: int = 7,
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The grok_power figures: one model's steps/s and useful GFLOP/s against the matrix product
    (alternating rounds, as the paper setting), and an n_members-seed ensemble against the same
    members one after another. All through the engine's compiled chunk, compile excluded."""
    cfg = grok_config(steps, overrides)
    t, m, tr = cfg.task, cfg.model, cfg.train
    trainer, inputs = _engine(cfg)
    init = jax.jit(over_members(trainer.init))
    chunk = jax.jit(over_members(trainer.chunk, in_axes=(0, 0, None)))  # one compile per member count
    members = _members(cfg, n_members)
    flops = grok_flops_per_step(cfg)
    setting = (f"grok_power (x{'/' if t.op == 'div' else ' ' + t.op + ' '}y mod {t.p}, {m.n_layers} layers, "
               f"width {m.d_model}, batch {tr.batch_size})")

    # One model: a long chunk (one evaluation of the p^2 table per chunk, `grok_eval_fraction` of its time).
    state, data = init(*inputs(members[:1]))
    pairs = side_by_side(cfg, steps, rounds, run_chunk=lambda: chunk(state, data, np.int32(steps)))
    eval_s = _best_time(lambda: chunk(state, data, np.int32(0)), 2)
    sps_Z, matmul_Z = np.array(pairs).T
    ratio_Z = sps_Z * flops / 1e9 / matmul_Z
    for i, (sps, mm, r) in enumerate(zip(sps_Z, matmul_Z, ratio_Z)):
        print(f"  grok round {i + 1}: {sps:.2f} steps/s = {sps * flops / 1e9:.1f} useful GFLOP/s; "
              f"matrix product (2048^3, float32) {mm:.1f} GFLOP/s; ratio {r:.2f}", flush=True)
    out: dict[str, Any] = {"grok_chunk_steps": steps, "grok_flops_per_step": flops}
    out["grok_steps_per_s"] = float(np.median(sps_Z))
    out["grok_useful_gflops"] = out["grok_steps_per_s"] * flops / 1e9
    out["grok_matmul_gflops"] = float(np.median(matmul_Z))
    out["grok_gflops_ratio"] = float(np.median(ratio_Z))
    out["grok_gflops_ratio_range"] = [float(ratio_Z.min()), float(ratio_Z.max())]
    out["grok_gflops_target_met"] = bool(out["grok_gflops_ratio"] >= 0.5)
    out["grok_eval_fraction"] = eval_s * out["grok_steps_per_s"] / steps
    met = "met" if out["grok_gflops_target_met"] else "not met"
    print(f"{setting}, one model, medians of {rounds} rounds of {steps}-step chunks: {out['grok_steps_per_s']:.2f} "
          f"steps/s, {out['grok_useful_gflops']:.1f} useful GFLOP/s ({flops / 1e9:.3f} GFLOP/step); matrix product "
          f"{out['grok_matmul_gflops']:.1f} GFLOP/s; useful/matrix product {out['grok_gflops_ratio']:.2f} (rounds: "
          f"{ratio_Z.min():.2f} to {ratio_Z.max():.2f}; target 0.5 {met}); "
          f"evaluation {100 * out['grok_eval_fraction']:.1f}% of a chunk", flush=True)

    # Ensemble against one after another: training time only (a chunk less a 0-step chunk, see
    # _train_and_eval_seconds), compile excluded from both (a 0-step warm-up call on each program first).
    # The members' own 1-member states, stacked, are the ensemble's (init is per member), which
    # spares compiling init for n_members.
    runs = [init(*inputs([mem])) for mem in members]
    ens_state, ens_data = jax.tree.map(lambda *x: jnp.concatenate(x), *runs)
    jax.block_until_ready(chunk(ens_state, ens_data, np.int32(0)))
    ens_train_s, ens_eval_s = _train_and_eval_seconds(chunk, ens_state, ens_data, ensemble_steps)
    jax.block_until_ready(chunk(*runs[0], np.int32(0)))  # compiled above already; warms the caches
    seq_train_s, seq_eval_s = np.sum([_train_and_eval_seconds(chunk, s, d, ensemble_steps) for s, d in runs], axis=0)
    ens, seq = n_members * ensemble_steps / ens_train_s, n_members * ensemble_steps / seq_train_s
    out.update(grok_ensemble_members=n_members, grok_ensemble_steps=ensemble_steps,
               grok_ensemble_model_steps_per_s=ens, grok_sequential_model_steps_per_s=float(seq),
               grok_ensemble_speedup=float(ens / seq), grok_ensemble_eval_s=ens_eval_s,
               grok_sequential_eval_s=float(seq_eval_s))
    print(f"{setting}, model-steps/s over {ensemble_steps}-step chunks (training only): {n_members}-seed ensemble "
          f"{ens:.1f}; the same {n_members} one after another {seq:.1f}; ensemble speedup {ens / seq:.2f}x "
          f"(evaluating the table: ensemble {ens_eval_s:.2f} s, one after another {seq_eval_s:.2f} s)", flush=True)
    return out


def run(paper_steps: int = 20, small_steps: int = 2000, members: int = 64, repeats: int = 3,
        rounds: int = 7, only: Sequence[str] = SECTIONS, grok_steps: int = 200, grok_ensemble_steps: int = 30,
        grok_members: int = 8, grok_overrides: Sequence[str] = (), sweep_points: int = 24,
        sweep_steps: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"device": device_info()}
    if "paper" in only:
        out.update(_paper_section(paper_steps, rounds))
    if "small" in only:
        out.update(_small_section(small_steps, members, repeats))
    if "grok" in only:
        out.update(grok_section(grok_steps, grok_ensemble_steps, grok_members, rounds, grok_overrides))
    if "sweep" in only:
        out.update(sweep_section(sweep_points, sweep_steps))
    return out


def _paper_section(paper_steps: int, rounds: int) -> dict[str, Any]:
    """Section 1: the paper setting's step against the matrix product, in alternating rounds."""
    out: dict[str, Any] = {}
    paper = _config(n_tasks=500, n=100, width=128, batch=20_000, steps=paper_steps)
    flops = train_flops_per_sample(500, 100, 128, 1, gather=True) * 20_000
    pairs = side_by_side(paper, paper_steps, rounds)
    sps_Z, matmul_Z = np.array(pairs).T
    fraction_Z = sps_Z * flops / 1e9 / matmul_Z
    for i, (sps, mm, fr) in enumerate(zip(sps_Z, matmul_Z, fraction_Z)):
        print(f"  round {i + 1}: paper setting {sps:.2f} steps/s = {sps * flops / 1e9:.1f} useful GFLOP/s; "
              f"matrix product (2048^3, float32) {mm:.1f} GFLOP/s; ratio {fr:.2f}", flush=True)
    out["steps_per_s"] = float(np.median(sps_Z))
    out["matmul_gflops"] = float(np.median(matmul_Z))
    out["useful_gflops"] = out["steps_per_s"] * flops / 1e9
    out["useful_fraction_of_matmul"] = float(np.median(fraction_Z))
    out["useful_fraction_range"] = [float(fraction_Z.min()), float(fraction_Z.max())]
    print(f"paper setting (width 128, batch 20,000, online), medians of {rounds} rounds: {out['steps_per_s']:.2f} steps/s, "
          f"{out['useful_gflops']:.1f} useful GFLOP/s; matrix product {out['matmul_gflops']:.1f} GFLOP/s; "
          f"useful/matrix product {out['useful_fraction_of_matmul']:.2f} (rounds: {fraction_Z.min():.2f} to "
          f"{fraction_Z.max():.2f})", flush=True)
    return out


def _small_section(small_steps: int, members: int, repeats: int) -> dict[str, Any]:
    """Section 2: the small setting's ensemble, one after another, and the per-step loop."""
    out: dict[str, Any] = {}
    small = _config(n_tasks=500, n=100, width=16, batch=64, steps=small_steps)
    ens = members * engine_steps_per_s(small, members, small_steps, repeats)
    seq = sequential_steps_per_s(small, members, small_steps)
    loop = plain_loop_steps_per_s(small, small_steps)
    out.update(ensemble_model_steps_per_s=ens, sequential_model_steps_per_s=seq, plain_loop_steps_per_s=loop,
               ensemble_speedup=ens / seq, loop_speedup=ens / loop, engine_vs_loop_one_member=seq / loop)
    print(f"small setting (width 16, batch 64), model-steps/s: {members}-member ensemble {ens:,.0f}; "
          f"{members} members one after another {seq:,.0f}; plain per-step loop {loop:,.0f}", flush=True)
    print(f"ensemble speedup {ens / seq:.2f}x vs one after another, {ens / loop:.1f}x vs per-step loop "
          f"(one member through the engine: {seq / loop:.1f}x the per-step loop)", flush=True)
    return out


def _sweep(launcher: str, points: int, steps: int, folder: Path) -> dict[str, float]:
    """One sweep through the app, in a fresh process as a user runs it: its times from outside and
    from its jobs' summaries (a vmap group's training is counted once)."""
    sweep_dir = folder / launcher
    args = [sys.executable, "-m", "toy_quanta.cli.app", "-m", f"seed=range(0,{points})", f"train.steps={steps}",
            *SWEEP, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}", "name=bench_sweep"]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the {launcher} sweep failed:\n{proc.stderr[-2000:]}")
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
    groups = {json.dumps(s["group"]["group_jobs"]): s for s in summaries if s.get("group")} or {
        str(i): s for i, s in enumerate(summaries)}
    train = sum(s["train_s"] for s in groups.values())
    compile_s = sum(s["compile_s"] for s in groups.values())
    return {"jobs": len(summaries), "wall_s": wall, "train_s": train, "compile_s": compile_s,
            "other_per_job_s": (wall - train - compile_s) / max(len(summaries), 1),
            "wall_over_train_and_compile": wall / (train + compile_s)}


def sweep_section(points: int = 24, steps: int = 200) -> dict[str, Any]:
    """Section 4: the same sweep through the vmap and the basic launcher, then collected."""
    from toy_quanta.analysis.collect import collect

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="toy_quanta_bench_sweep_") as tmp:
        for launcher in ("vmap", "basic"):
            got = _sweep(launcher, points, steps, Path(tmp))
            out.update({f"sweep_{launcher}_{key}": value for key, value in got.items()})
            print(f"sweep of {points} points ({steps} steps, {launcher} launcher): {got['wall_s']:.1f} s wall = "
                  f"{got['train_s']:.1f} s training + {got['compile_s']:.1f} s compile + {got['other_per_job_s']:.3f} s "
                  f"per job besides (start-up, composing, writing); wall / (training + compile) "
                  f"{got['wall_over_train_and_compile']:.2f}", flush=True)
        t0 = time.perf_counter()
        table, report = collect(Path(tmp) / "vmap")
        out["sweep_collect_s"] = time.perf_counter() - t0
        print(f"toy-quanta-collect of the vmap sweep: {report['jobs_completed']} jobs, {len(table):,} rows in "
              f"{out['sweep_collect_s']:.2f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m toy_quanta.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--paper-steps", type=int, default=20)
    parser.add_argument("--small-steps", type=int, default=2000)
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7,
                        help="alternating training-step / matrix-product measurements (paper and grok sections)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="sections to run: paper (paper setting vs matrix product), small (64-member ensemble), "
                             "grok (grok_power), sweep (a multirun through the vmap and basic launchers); default all")
    parser.add_argument("--sweep-points", type=int, default=24, help="grid points (seeds) of the sweep section")
    parser.add_argument("--sweep-steps", type=int, default=200, help="training steps of each grid point")
    parser.add_argument("--grok-steps", type=int, default=200,
                        help="steps per chunk of the one-model grok_power measurement (one evaluation per chunk)")
    parser.add_argument("--grok-ensemble-steps", type=int, default=30, help="steps per chunk, grok_power ensemble")
    parser.add_argument("--grok-members", type=int, default=8, help="seeds in the grok_power ensemble")
    parser.add_argument("--grok-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides on top of experiment=grok_power (e.g. train.batch_size=256)")
    args = parser.parse_args(argv)
    out = run(args.paper_steps, args.small_steps, args.members, args.repeats, args.rounds, args.only,
              args.grok_steps, args.grok_ensemble_steps, args.grok_members, args.grok_overrides, args.sweep_points,
              args.sweep_steps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
