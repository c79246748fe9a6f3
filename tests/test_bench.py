"""The benchmark runs end to end and its figures are consistent (speed itself is not asserted)."""

import json

from toy_quanta import bench
from toy_quanta.models.mlp import train_flops_per_sample


def test_bench_prints_consistent_figures_and_a_json_line(capsys):
    bench.main(["--paper-steps", "2", "--small-steps", "20", "--members", "4", "--repeats", "1", "--rounds", "3"])
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
