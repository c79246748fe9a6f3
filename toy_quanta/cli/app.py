"""The Hydra app, `toy-quanta`: one job = one ensemble of members trained as one program.

    toy-quanta                                   # the default job (experiment=demo)
    toy-quanta -m model.width=16,32,64 seed=0,1  # a sweep, one job after another
    toy-quanta -m hydra/launcher=vmap model.width=16,32 seed=0,1,2  # same-shaped jobs vmapped together
    toy-quanta tasks_module=my_task.py task=my_task   # a task of your own (docs/adding-a-task.md)
"""

from __future__ import annotations

import re
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig

from toy_quanta import config, registry
from toy_quanta.data.mnist import MNISTFormatError
from toy_quanta.errors import ConfigError
from toy_quanta.job import run_job

_TASKS_MODULE = re.compile(r"^\+{0,2}tasks_module=(.+)$")


def import_tasks_modules(argv: list[str]) -> None:
    """Import the tasks_module=... of the command line before Hydra composes the config, so that
    task=<a task it registers> is a known group option."""
    for arg in argv:
        match = _TASKS_MODULE.match(arg)
        if match:
            for spec in match.group(1).split(","):  # a sweep over modules imports each
                registry.import_tasks_module(spec.strip().strip("'\""))


def _register_launcher() -> None:
    """Hydra finds plugins by walking the hydra_plugins namespace, which editable installs hide;
    registering the class by hand makes `hydra/launcher=vmap` work in every kind of install."""
    from hydra_plugins.toy_quanta_vmap_launcher.vmap_launcher import VmapLauncher

    Plugins.instance().register(VmapLauncher)


registry.load_builtins()
config.register_configs()
_register_launcher()


@hydra.main(version_base=None, config_path="pkg://toy_quanta.conf", config_name="config")
def _main(cfg: DictConfig) -> dict[str, Any]:
    hc = HydraConfig.get()
    try:
        return run_job(cfg, hc.runtime.output_dir, list(hc.overrides.task))
    except (ConfigError, MNISTFormatError) as exc:  # bad settings, or a corrupt data file: one line, no traceback
        if hc.mode == RunMode.MULTIRUN:
            raise  # Hydra records the job as failed; the other jobs of the sweep still ran
        print(f"toy-quanta: error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> Any:
    try:
        import_tasks_modules(sys.argv[1:])
    except ConfigError as exc:
        print(f"toy-quanta: error: {exc}", file=sys.stderr)
        sys.exit(2)
    config.register_configs()  # again: the user's module may have registered tasks and models
    return _main()


if __name__ == "__main__":
    main()
