"""`toy-quanta-qdg RUN_DIR [key=value ...]`: quanta discovery from gradients (Michaud et al. 2023)
on a trained member of a toy-quanta job, scored against the true subtasks.

    toy-quanta-qdg outputs/demo/2026-11-24_10-00-00
    toy-quanta-qdg RUN_DIR n_clusters=20 params=[control,bits,out] affinity=cosine

Draws samples with the task's own sampler, keeps those the model predicts well by the task's own
loss, computes their per-sample gradient cosine similarities, clusters the affinity at every count
(toy_quanta.analysis.qdg.run_qdg), and writes into RUN_DIR/qdg/<time>/: assignments.parquet
(the cluster of every sample), samples.npz, rank_frequency.png, similarity.png, report.md and
report.json. The last line of stdout is JSON with ari, nmi, envelope_slope and its interval.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from toy_quanta.analysis import qdg
from toy_quanta.config import QDGConfig, register_configs
from toy_quanta.errors import ConfigError, RunFileError


@hydra.main(version_base=None, config_path="pkg://toy_quanta.conf", config_name="qdg")
def _hydra_main(dcfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg: QDGConfig = OmegaConf.to_object(dcfg)
        report = qdg.run_qdg(cfg, out_dir)
    except (ConfigError, FileNotFoundError, RunFileError) as exc:
        print(f"toy-quanta-qdg: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(qdg.summary_line(report))
    print(f"output directory: {out_dir}")
    print(json.dumps(qdg.headline(report)), flush=True)


def main() -> None:
    """A first argument without '=' is RUN_DIR (made absolute, so the output lands inside it)."""
    args = sys.argv[1:]
    if args and "=" not in args[0] and not args[0].startswith("-"):
        run_dir = Path(args[0]).resolve()
        if not run_dir.is_dir():
            print(f"toy-quanta-qdg: error: RUN_DIR {args[0]!r} is not a directory", file=sys.stderr)
            sys.exit(2)
        quoted = str(run_dir).replace("\\", "\\\\").replace("'", "\\'")
        # Hydra takes its overrides as one run of positional arguments: -m goes first, then run_dir.
        multirun = [a for a in args[1:] if a in ("-m", "--multirun")]
        rest = [a for a in args[1:] if a not in ("-m", "--multirun")]
        sys.argv = [sys.argv[0], *multirun, f"run_dir='{quoted}'", *rest]
    elif not any(a.startswith("run_dir=") for a in args) and not any(a in ("-h", "--help", "--cfg", "-c") for a in args):
        print("usage: toy-quanta-qdg RUN_DIR [key=value ...]  (keys: toy-quanta-qdg RUN_DIR --cfg job)", file=sys.stderr)
        sys.exit(2)
    register_configs()  # conf/qdg.yaml's defaults name the qdg_config schema
    _hydra_main()


if __name__ == "__main__":
    main()
