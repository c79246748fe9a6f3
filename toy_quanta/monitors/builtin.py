"""The built-in monitors, registered with toy_quanta.hooks when a job first looks for monitors:
TensorBoard (train.tensorboard) and Weights & Biases (train.wandb). Each one's package is imported
only when a run starts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from toy_quanta.checks import get
from toy_quanta.errors import ConfigError
from toy_quanta.hooks import register_monitor


def _tensorboard(out_dir: Path, members: Sequence[dict[str, Any]], cfg: Any) -> Any:
    from toy_quanta.monitors.tensorboard import TensorBoardLog

    return TensorBoardLog(out_dir, members)


def _wandb(out_dir: Path, members: Sequence[dict[str, Any]], cfg: Any) -> Any:
    from toy_quanta.monitors.wandb import WandbLog

    return WandbLog(out_dir, members, cfg)


def _wandb_installed(cfg: Any) -> None:
    """W&B is an optional extra: a job that asks for it and lacks it refuses before it trains."""
    try:
        import wandb  # noqa: F401
    except ImportError as exc:
        raise ConfigError("train.wandb", True, "false unless Weights & Biases is installed: "
                                               f"pip install toy-quanta[wandb] ({exc})") from None


register_monitor("tensorboard", lambda cfg: get(cfg, "train.tensorboard") is True, _tensorboard,
                 keys=("train.tensorboard",), folder="tensorboard")
register_monitor("wandb", lambda cfg: get(cfg, "train.wandb") is True, _wandb,
                 keys=("train.wandb", "train.wandb_project"), check=_wandb_installed, folder="wandb")
