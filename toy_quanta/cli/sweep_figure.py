"""The Hydra callback that draws a multirun's one figure (sweep.png) when its jobs have ended,
whatever the launcher: conf/config.yaml registers it (hydra.callbacks.sweep_figure). A sweep's
jobs draw none of their own by default (train.figures); `toy-quanta-figures` draws them later."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("toy_quanta")


class SweepFigure(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from toy_quanta.cli.figures import draw_sweep

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            log.info("sweep figure: %s", draw_sweep(sweep_dir))
        except Exception as exc:  # noqa: BLE001  the jobs' results are written: a figure never fails the sweep
            log.warning("no sweep figure for %s (%s: %s)", sweep_dir, type(exc).__name__, exc)
