"""toy_quanta.engine.devices: the members' axis sharded over devices. On CPU, XLA can show one
machine as several devices (--xla_force_host_platform_device_count), which is how the sharded
program is checked here against the same members on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from toy_quanta.engine import devices

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, "tests")
    import jax, numpy as np
    from conftest import tiny_config
    from toy_quanta.engine.loop import fit
    from toy_quanta.engine.members import expand
    out = {"n_devices": jax.device_count()}
    for used in (None, 1):  # every device, then one
        cfg = tiny_config(train={"steps": 40, "log_every": 20, "devices": used}, ensemble={"seeds": 3})
        r = fit(cfg, expand(cfg))
        out[str(used)] = {"devices_used": r.devices_used,
                          "logs": {k: np.stack(v).tolist() for k, v in r.logs.items()},
                          "params": [np.asarray(x).tolist() for x in jax.tree.leaves(r.params)]}
    print("RESULT " + json.dumps(out))
""")


def test_three_members_on_two_devices_give_the_one_device_results():
    """Three members (an uneven count: padded to four) sharded over two CPU devices: two devices
    used, and every metric and parameter equal to the same members on one device up to float32
    rounding (each device vectorises over its own 2 members instead of 3: XLA may round a sum in
    another order; measured: at most 3e-6 relative after 40 Adam steps)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ")[-1])
    assert out["n_devices"] == 2
    sharded, single = out["None"], out["1"]
    assert sharded["devices_used"] == 2 and single["devices_used"] == 1
    assert sharded["logs"].keys() == single["logs"].keys()
    for name in sharded["logs"]:
        got, want = np.array(sharded["logs"][name]), np.array(single["logs"][name])
        assert got.shape[1] == 3, name  # the padding member is dropped
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    for got, want in zip(sharded["params"], single["params"]):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)


def test_plan_and_pad():
    """One device or one member: no sharding. pad repeats the last member's rows."""
    assert devices.plan(5, devices=1) == (None, 5)
    assert devices.plan(1) == (None, 1)
    tree = {"a": np.arange(6).reshape(3, 2), "b": np.array([1.0, 2.0, 3.0])}
    padded = devices.pad(tree, 4)
    np.testing.assert_array_equal(padded["a"], [[0, 1], [2, 3], [4, 5], [4, 5]])
    np.testing.assert_array_equal(padded["b"], [1.0, 2.0, 3.0, 3.0])
    assert devices.pad(tree, 3)["a"] is not None and devices.pad(tree, 3)["a"].shape == (3, 2)
    assert devices.devices_used(None) == 1
