"""The benchmark (toy_quanta.bench) runs end to end and its figures are consistent (speed itself is not asserted)."""

import json

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from conftest import dot_flops
from toy_quanta import bench
from toy_quanta.models.mlp import train_flops_per_sample
from toy_quanta.models.transformer import Transformer, attention_flops_per_sequence, train_flops_per_sequence


@pytest.mark.slow  # 12 s; the fast suite is near its 10-minute budget
def test_bench_prints_consistent_figures_and_a_json_line(quiet_background, capsys):
    bench.main(["--only", "paper", "small", "--paper-steps", "2", "--small-steps", "20", "--members", "4",
                "--repeats", "1", "--rounds", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    for key in ("steps_per_s", "useful_gflops", "matmul_gflops", "ensemble_speedup", "loop_speedup"):
        assert out[key] > 0, key
    flops_per_step = train_flops_per_sample(500, 100, 128, 1) * 20_000
    assert abs(out["useful_gflops"] - out["steps_per_s"] * flops_per_step / 1e9) < 1e-6 * out["useful_gflops"]
    assert abs(out["ensemble_speedup"] - out["ensemble_model_steps_per_s"] / out["sequential_model_steps_per_s"]) < 1e-9
    assert abs(out["loop_speedup"] - out["ensemble_model_steps_per_s"] / out["plain_loop_steps_per_s"]) < 1e-9
    assert any("GFLOP/s" in line for line in lines[:-1])
    # the ratio is the median of three side-by-side rounds, inside their range
    low, high = out["useful_fraction_range"]
    assert low <= out["useful_fraction_of_matmul"] <= high
    assert sum(line.lstrip().startswith("round ") for line in lines[:-1]) == 3
    assert not any(key.startswith("grok_") for key in out)


# --- grok_power ------------------------------------------------------------------------------

def test_grok_config_is_the_experiment_file_with_steps_overridden():
    cfg = bench.grok_config(123)
    t, m, o, tr = cfg.task, cfg.model, cfg.optim, cfg.train
    assert (t.name, t.p, t.op, t.train_fraction, t.full_batch) == ("modular", 97, "div", 0.5, False)
    assert (m.name, m.n_layers, m.d_model, m.n_heads, m.d_mlp, m.layer_norm) == ("transformer", 2, 128, 4, 512, True)
    assert (o.name, o.lr, o.weight_decay, o.b2) == ("adamw", 1e-3, 1.0, 0.98)
    assert (tr.batch_size, tr.steps) == (512, 123)
    assert bench.grok_flops_per_step(cfg) == 512 * train_flops_per_sequence(4, 2, 128, 512, 97)


@pytest.mark.slow  # 10 s; the paper and small sections stay in the fast suite
def test_grok_section_prints_consistent_figures(quiet_background, capsys):
    """The grok section through its real code path, on a shrunken model so that it takes seconds
    (the compiles dominate: one 1-member and one 2-member training program; one layer compiles faster)."""
    shrink = ["task.p=11", "model.n_layers=1", "model.d_model=16", "model.d_mlp=32", "train.batch_size=32"]
    bench.main(["--only", "grok", "--rounds", "2", "--grok-steps", "3", "--grok-ensemble-steps", "20",
                "--grok-members", "2", "--grok-overrides", *shrink])
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    assert "steps_per_s" not in out and "ensemble_speedup" not in out  # other sections skipped
    for key in ("grok_steps_per_s", "grok_useful_gflops", "grok_matmul_gflops", "grok_gflops_ratio",
                "grok_ensemble_model_steps_per_s", "grok_sequential_model_steps_per_s", "grok_ensemble_speedup"):
        assert out[key] > 0, key
    flops = train_flops_per_sequence(4, 1, 16, 32, 11) * 32
    assert out["grok_flops_per_step"] == flops
    assert out["grok_useful_gflops"] == pytest.approx(out["grok_steps_per_s"] * flops / 1e9, rel=1e-9)
    low, high = out["grok_gflops_ratio_range"]
    assert low <= out["grok_gflops_ratio"] <= high
    assert out["grok_gflops_target_met"] == (out["grok_gflops_ratio"] >= 0.5)
    assert out["grok_eval_fraction"] > 0  # its share of a chunk: near 1 for these 3-step chunks
    assert out["grok_ensemble_speedup"] == pytest.approx(
        out["grok_ensemble_model_steps_per_s"] / out["grok_sequential_model_steps_per_s"], rel=1e-9)
    assert (out["grok_ensemble_members"], out["grok_ensemble_steps"], out["grok_chunk_steps"]) == (2, 20, 3)
    assert out["grok_ensemble_eval_s"] > 0 and out["grok_sequential_eval_s"] > 0
    assert sum(line.lstrip().startswith("grok round ") for line in lines[:-1]) == 2
    assert any("ensemble speedup" in line for line in lines[:-1])


def _abstract_transformer(n_out: int, seq_len: int, arch: dict):
    """graphdef and parameter shapes only: tracing and cost analysis need no values."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(vocab=n_out + 2, n_out=n_out, seq_len=seq_len,
                                                        rngs=nnx.Rngs(0), **arch)))


POWER = dict(n_layers=2, d_model=128, n_heads=4, d_mlp=512, layer_norm=True)
ODD = dict(n_layers=3, d_model=16, n_heads=2, d_mlp=24, layer_norm=False, tied=True, positions="sinusoidal")


@pytest.mark.parametrize("last_only", [True, False], ids=["call", "all_logits"])
@pytest.mark.parametrize("arch", [POWER, ODD], ids=["power", "odd"])
def test_train_flops_per_sequence_is_the_programs_matrix_products(arch, last_only):
    """Exact: the count equals the FLOPs of every matrix product in the traced program plus the
    attention's pair-by-pair products (elementwise, so not dot_general), forward (x 3) and forward
    + backward (jax.grad of the loss), so the 3x is checked too; embedding lookups are gathers,
    not products, in both."""
    B, T, n_out = 8, 4, 97
    graphdef, params = _abstract_transformer(n_out, T, arch)
    tokens = jnp.zeros((B, T), jnp.int32)
    labels = jnp.zeros((B,) if last_only else (B, T), jnp.int32)

    def forward(p):
        model = nnx.merge(graphdef, p)
        return model(tokens) if last_only else model.all_logits(tokens)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(forward(p), labels).mean()

    count = train_flops_per_sequence(T, arch["n_layers"], arch["d_model"], arch["d_mlp"], n_out, last_only=last_only)
    attention = B * attention_flops_per_sequence(T, arch["n_layers"], arch["d_model"], last_only)
    assert 3 * (dot_flops(jax.make_jaxpr(forward)(params).jaxpr) + attention) == B * count
    assert dot_flops(jax.make_jaxpr(jax.grad(loss))(params).jaxpr) + 3 * attention == B * count


def test_attention_flops_count_the_causal_pairs():
    # 4 positions: 10 causal pairs in a block that runs every query, 4 for the last query alone;
    # 2 products (QK^T, AV) x 2 FLOPs per multiply-add x d_model per pair.
    assert attention_flops_per_sequence(4, 2, 128) == 2 * 2 * 128 * (10 + 4)
    assert attention_flops_per_sequence(4, 2, 128, last_only=False) == 2 * 2 * 128 * (10 + 10)
    assert attention_flops_per_sequence(5, 1, 16) == 2 * 2 * 16 * 5


def test_train_flops_per_sequence_by_hand_and_against_xla():
    # grok_power forward, T=4, D=128, MLP 512, 97 outputs. Layer 1, all 4 positions: Q, K, V and
    # output projections 4 x 4 x 2 x 128^2 = 524,288; QK^T and AV over the 10 causal pairs
    # 2 x 2 x 10 x 128 = 5,120; MLP 4 x 2 x 2 x 128 x 512 = 1,048,576. Layer 2, the last query: Q
    # and output projections 2 x 2 x 128^2 = 65,536; K and V for 4 positions 262,144; QK^T and AV
    # 2 x 2 x 4 x 128 = 2,048; MLP 262,144. Unembedding 2 x 128 x 97 = 24,832. Forward total 2,194,688.
    assert train_flops_per_sequence(4, 2, 128, 512, 97) == 3 * 2_194_688
    # XLA's cost analysis of the compiled forward counts everything (layer norms, softmax, biases,
    # ReLU, residual adds: O(d_model) per position against O(d_model^2) for the products), so at
    # width 128 it reads a little above the product count: at least it, and within 3% (it is 1.1%).
    B = 64
    graphdef, params = _abstract_transformer(97, 4, POWER)
    tokens = jnp.zeros((B, 4), jnp.int32)
    cost = jax.jit(lambda p: nnx.merge(graphdef, p)(tokens)).lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    products = B * train_flops_per_sequence(4, 2, 128, 512, 97) / 3
    assert products <= cost["flops"] <= 1.03 * products


@pytest.mark.slow  # two multiruns in subprocesses (about 40 s)
def test_sweep_section_prints_each_launchers_costs(quiet_background, capsys):
    """The sweep section runs the same 2-point sweep through the vmap and the basic launcher, and its
    figures add up: wall = training + compile + the rest."""
    bench.main(["--only", "sweep", "--sweep-points", "2", "--sweep-steps", "20"])
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])
    for launcher in ("vmap", "basic"):
        got = {k.removeprefix(f"sweep_{launcher}_"): v for k, v in out.items() if k.startswith(f"sweep_{launcher}_")}
        assert got["jobs"] == 2 and got["train_s"] > 0 and got["compile_s"] > 0
        assert got["wall_s"] == pytest.approx(got["train_s"] + got["compile_s"] + 2 * got["other_per_job_s"])
        assert any(f"{launcher} launcher" in line for line in lines[:-1])
    assert out["sweep_collect_s"] > 0 and "steps_per_s" not in out
