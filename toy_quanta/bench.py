"""`python -m toy_quanta.bench`: training throughput, measured side by side in one run.

1. The paper's setting (n_tasks 500, n 100, k 3, alpha 0.4, width 128, batch 20,000, online):
   steps/s and useful GFLOP/s of one member, against this machine's matrix-product GFLOP/s,
   the two measured in alternation over several rounds (medians, and the range of the ratio).
2. A small setting (width 16, batch 64): model-steps/s of a 64-member vmapped ensemble, against
   the same 64 members run one after another through the engine, and against a plain Python
   loop that calls a jitted training step once per step.
Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from toy_quanta.config import Config, MLPConfig, OptimConfig, SparseParityConfig, TrainConfig
from toy_quanta.data import sparse_parity as sp
from toy_quanta.engine.loop import subsets_for
from toy_quanta.engine.members import expand, stack
from toy_quanta.engine.optim import make_optimizer
from toy_quanta.engine.train import make_model, make_train
from toy_quanta.models.mlp import train_flops_per_sample
from toy_quanta.results import device_info


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of `repeats` timed calls (after one warm-up): the least disturbed by other load."""
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


def _engine_chunk(cfg: Config, n_members: int, steps: int) -> Callable[[], Any]:
    """A call that runs `steps` steps of one vmapped program of n_members members (compiled once)."""
    members = _members(cfg, n_members)
    trainer = make_train(cfg)
    state, data = jax.jit(jax.vmap(trainer.init))(stack(members), subsets_for(cfg, members))
    chunk = jax.jit(jax.vmap(trainer.chunk, in_axes=(0, 0, None)))
    n = np.int32(steps)
    return lambda: chunk(state, data, n)


def engine_steps_per_s(cfg: Config, n_members: int, steps: int, repeats: int) -> float:
    """Steps/s of one vmapped program of n_members members, through the engine's compiled chunk."""
    return steps / _best_time(_engine_chunk(cfg, n_members, steps), repeats)


def side_by_side(cfg: Config, steps: int, rounds: int) -> list[tuple[float, float]]:
    """[(steps/s of one member, matrix-product GFLOP/s)] measured in alternation, round after
    round: on a shared machine both figures drift by tens of percent within a minute, so each
    ratio is taken from measurements seconds apart."""
    run_chunk = _engine_chunk(cfg, 1, steps)
    pairs = []
    for _ in range(rounds):
        sps = steps / _best_time(run_chunk, 2)
        pairs.append((sps, matmul_gflops(repeats=3)))
    return pairs


def sequential_steps_per_s(cfg: Config, n_members: int, steps: int) -> float:
    """Model-steps/s of n_members single-member runs, one after another (one compile shared)."""
    trainer = make_train(cfg)
    init = jax.jit(jax.vmap(trainer.init))
    chunk = jax.jit(jax.vmap(trainer.chunk, in_axes=(0, 0, None)))
    n = np.int32(steps)
    runs = [init(stack([m]), subsets_for(cfg, [m])) for m in _members(cfg, n_members)]
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
        task_B, bits_BxN, label_B = sp.sample(key, subsets, t.alpha, cfg.train.batch_size, t.n)

        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(task_B, bits_BxN)
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


def run(paper_steps: int = 20, small_steps: int = 2000, members: int = 64, repeats: int = 3,
        rounds: int = 7) -> dict[str, Any]:
    out: dict[str, Any] = {"device": device_info()}
    paper = _config(n_tasks=500, n=100, width=128, batch=20_000, steps=paper_steps)
    flops = train_flops_per_sample(500, 100, 128, 1, gather=True) * 20_000
    pairs = side_by_side(paper, paper_steps, rounds)
    sps_R, matmul_R = np.array(pairs).T
    fraction_R = sps_R * flops / 1e9 / matmul_R
    for i, (sps, mm, fr) in enumerate(zip(sps_R, matmul_R, fraction_R)):
        print(f"  round {i + 1}: paper setting {sps:.2f} steps/s = {sps * flops / 1e9:.1f} useful GFLOP/s; "
              f"matrix product (2048^3, float32) {mm:.1f} GFLOP/s; ratio {fr:.2f}", flush=True)
    out["steps_per_s"] = float(np.median(sps_R))
    out["matmul_gflops"] = float(np.median(matmul_R))
    out["useful_gflops"] = out["steps_per_s"] * flops / 1e9
    out["useful_fraction_of_matmul"] = float(np.median(fraction_R))
    out["useful_fraction_range"] = [float(fraction_R.min()), float(fraction_R.max())]
    print(f"paper setting (width 128, batch 20,000, online), medians of {rounds} rounds: {out['steps_per_s']:.2f} steps/s, "
          f"{out['useful_gflops']:.1f} useful GFLOP/s; matrix product {out['matmul_gflops']:.1f} GFLOP/s; "
          f"useful/matrix product {out['useful_fraction_of_matmul']:.2f} (rounds: {fraction_R.min():.2f} to "
          f"{fraction_R.max():.2f})", flush=True)

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m toy_quanta.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--paper-steps", type=int, default=20)
    parser.add_argument("--small-steps", type=int, default=2000)
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="alternating paper-step / matrix-product measurements")
    args = parser.parse_args(argv)
    out = run(args.paper_steps, args.small_steps, args.members, args.repeats, args.rounds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
