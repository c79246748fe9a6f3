"""`hydra/launcher=joblib` for toy_quanta: Hydra's joblib launcher plus one setting, `env`, the
environment variables its worker processes start with (toy_quanta.config.JoblibConf).

Its workers (joblib's loky backend: fresh Python processes) inherit the launching process's
environment when they start, and each initialises JAX's backend only when its first job trains,
so variables set here reach every worker before JAX reads them. The default,
XLA_PYTHON_CLIENT_PREALLOCATE=false, stops each of the n_jobs processes from reserving 75% of a
shared GPU's memory at start (docs/scaling-out.md). The launching process does no JAX work.

The module's name starts with "_" so that Hydra's plugin scanner skips it (it needs the `cluster`
extra); toy_quanta.cli.app registers its class when hydra_joblib_launcher is installed.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher


class JoblibLauncher(HydraJoblibLauncher):
    def __init__(self, env: Optional[dict] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # everything else goes to joblib.Parallel, as in Hydra's launcher
        self.env = {str(k): str(v) for k, v in (env or {}).items()}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        before = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)  # the workers start (inside launch) with these
        try:
            return super().launch(job_overrides, initial_job_idx)
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
