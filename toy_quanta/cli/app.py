"""The Hydra app, `toy-quanta`: one job = one ensemble of members trained as one program.

    toy-quanta                                   # the default job (experiment=demo)
    toy-quanta -m model.width=16,32,64 seed=0,1  # a sweep, one job after another
    toy-quanta -m hydra/launcher=vmap model.width=16,32 seed=0,1,2  # same-shaped jobs vmapped together
    toy-quanta tasks_module=my_task.py task=my_task   # a task of your own (docs/adding-a-task.md)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig

from toy_quanta import config, registry, stopping
from toy_quanta.data.mnist import MNISTFormatError
from toy_quanta.errors import ClusterJobLost, ConfigError, DiskFull, Interrupted, RunDirBusy, RunFileError
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
    registering the classes by hand makes `hydra/launcher=vmap` (and, with the `cluster` extra,
    vmap_submitit_local, vmap_submitit_slurm and our joblib) work in every kind of install.
    Third-party plugins (submitit_*, joblib, ray) live in site-packages, where Hydra's scan finds them.
    The scan runs first (Plugins.instance()); it re-runs the config modules of the plugins it finds,
    so the configs are stored again after it: our submitit_local, submitit_slurm and joblib replace Hydra's."""
    from importlib.util import find_spec

    plugins = Plugins.instance()
    from hydra_plugins.toy_quanta_vmap_launcher.vmap_launcher import VmapLauncher

    plugins.register(VmapLauncher)
    if find_spec("hydra_plugins.hydra_submitit_launcher") is not None:  # the cluster extra
        from hydra_plugins.toy_quanta_vmap_launcher._vmap_submitit import (VmapSubmititLocalLauncher,
                                                                            VmapSubmititSlurmLauncher)

        from hydra_plugins.toy_quanta_vmap_launcher._submitit import SubmititSlurmLauncher

        plugins.register(SubmititSlurmLauncher)
        plugins.register(VmapSubmititLocalLauncher)
        plugins.register(VmapSubmititSlurmLauncher)
    if find_spec("hydra_plugins.hydra_joblib_launcher") is not None:  # the cluster extra
        from hydra_plugins.toy_quanta_vmap_launcher._joblib import JoblibLauncher

        plugins.register(JoblibLauncher)
    config.register_configs()


registry.load_builtins()
config.register_configs()
_register_launcher()


@hydra.main(version_base=None, config_path="pkg://toy_quanta.conf", config_name="config")
def _main(cfg: DictConfig) -> dict[str, Any]:
    hc = HydraConfig.get()
    try:
        return run_job(cfg, hc.runtime.output_dir, list(hc.overrides.task), sweep=hc.mode == RunMode.MULTIRUN)
    except (ConfigError, MNISTFormatError, RunFileError) as exc:  # bad settings, a corrupt file: one line, no traceback
        if isinstance(exc, ConfigError) and exc.key == "hydra.run.dir":
            _restore_hydra_files()  # the refused directory keeps the .hydra/ files of its own run
        if hc.mode == RunMode.MULTIRUN:
            raise  # Hydra records the job as failed; the other jobs of the sweep still ran
        print(f"toy-quanta: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except DiskFull as exc:  # one line naming the file; what was written before is kept
        if hc.mode == RunMode.MULTIRUN:
            raise
        print(f"toy-quanta: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as exc:  # summary.json says interrupted; the checkpoint resumes it
        print(f"toy-quanta: {exc}; the same command with the same output directory ({hc.runtime.output_dir}) "
              "resumes it", file=sys.stderr, flush=True)
        if hc.mode == RunMode.MULTIRUN:
            return {"status": "interrupted"}  # the sweep's remaining jobs return at once; main() exits
        sys.exit(128 + exc.signum)


_hydra_files: dict[Path, bytes] = {}


def _keep_hydra_files(argv: list[str]) -> None:
    """Hydra writes .hydra/*.yaml into the run directory before the job starts; when the job then
    refuses the directory (a run of another config is there), those files are put back."""
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            folder = Path(arg.partition("=")[2].strip("'\"")) / ".hydra"
            if folder.is_dir():
                _hydra_files.update({f: f.read_bytes() for f in folder.iterdir() if f.is_file()})


def _restore_hydra_files() -> None:
    for path, blob in _hydra_files.items():
        path.write_bytes(blob)


def main() -> Any:
    try:
        import_tasks_modules(sys.argv[1:])
    except ConfigError as exc:
        print(f"toy-quanta: error: {exc}", file=sys.stderr)
        sys.exit(2)
    config.register_configs()  # again: the user's module may have registered tasks and models
    _keep_hydra_files(sys.argv[1:])
    with stopping.watching():  # one stop request for the whole sweep
        out = _composed(_main, sys.argv[1:])
        if stopping.requested():  # a multirun that was asked to stop
            sys.exit(128 + stopping.requested())
    return out


def _composed(run: Callable[[], Any], argv: list[str]) -> Any:
    """run(), with Hydra's errors about one override (`task.nosie=0.1`, `task.alpha=abc`) as one
    line naming the key, the value and what is allowed (exit status 2); any other error is
    reported by Hydra as before. HYDRA_FULL_ERROR=1 set by the user keeps Hydra's full reports."""
    from hydra._internal.utils import run_and_report

    users = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing: the error comes here
    try:
        return run()
    except (ClusterJobLost, RunDirBusy) as exc:  # a sweep's job lost on the cluster, or trained by another process
        print(f"toy-quanta: error: {exc}", file=sys.stderr)  # one line; the other jobs' results are kept
        sys.exit(2 if isinstance(exc, RunDirBusy) else 1)
    except Exception as exc:  # noqa: BLE001  (reported below, one way or the other)
        line = None if users == "1" else override_error(exc, argv)
        _restore_env("HYDRA_FULL_ERROR", users)
        if line is None:
            def again() -> None:
                raise exc
            return run_and_report(again)  # Hydra's own report and exit status
        print(f"toy-quanta: error: {line}", file=sys.stderr)
        sys.exit(2)
    finally:
        _restore_env("HYDRA_FULL_ERROR", users)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def override_error(exc: BaseException, argv: list[str]) -> str | None:
    """A Hydra composition error caused by one override, as ConfigError's one line (with the
    nearest key for a misspelt one); None for any other error."""
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if not isinstance(exc, ConfigCompositionException) or not isinstance(cause, OmegaConfBaseException) or not key:
        return None
    given = [a.partition("=")[2] for a in argv if a.lstrip("+~").partition("=")[0] == key]
    value = yaml.safe_load(given[-1]) if given else None
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        parent = key.rpartition(".")[0]
        schema = getattr(cause, "object_type", None)
        known = [f"{parent}.{f.name}" if parent else f.name for f in dataclasses.fields(schema)] \
            if dataclasses.is_dataclass(schema) else []
        near = difflib.get_close_matches(key, known, n=1)
        allowed = "no such key in the config" + (f" (did you mean {near[0]}?)" if near else
                                                 "; see `toy-quanta --cfg job` for every key")
    else:
        allowed = str(getattr(cause, "msg", cause)).splitlines()[0]
    return str(ConfigError(key, value, allowed))


if __name__ == "__main__":
    main()
