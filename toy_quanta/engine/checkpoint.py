"""Training-state checkpoints: everything a run needs to go on from a chunk boundary exactly as if
it had never stopped, in one .npz written atomically (the previous checkpoint stays until the new
one is complete).

Saved: the TrainState (parameters, optimiser state, step, alive and divergence flags, the running
loss sums; the batches' random stream is fold_in(data_key, step), so the step is its position),
the metric rows so far, the parameter snapshots, and the members' hyperparameters (a checkpoint
of other members is refused). Arrays are stored under their pytree paths, so a checkpoint whose
structure or shapes differ from the run's is refused with the path that differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from toy_quanta.errors import RunFileError
from toy_quanta.files import atomic_write

STATE_FILE = "train_state.npz"
FORMAT = 1
KEEP_HINT = "the file is kept; delete it (or choose another output directory) to train from step 0"


@dataclass
class Saved:
    state: Any  # engine.train.TrainState on the host, members unpadded
    steps: list[int]
    logs: dict[str, list[np.ndarray]]
    snapshots: list[Any]
    train_s: float


def _flat(tree: Any, prefix: str) -> tuple[dict[str, Any], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return {prefix + jax.tree_util.keystr(path): leaf for path, leaf in leaves}, treedef


def save(path: Path, state: Any, steps: Sequence[int], logs: dict[str, list[np.ndarray]], snapshots: list[Any],
         members: Sequence[dict], train_s: float) -> None:
    """Write the checkpoint (state and snapshots on the host, first axis = members)."""
    arrays = {key: np.asarray(leaf) for key, leaf in _flat(jax.device_get(state), "state")[0].items()}
    arrays.update({f"log/{name}": np.stack(values) for name, values in logs.items()})
    arrays["steps"] = np.asarray(steps, np.int64)
    if snapshots:
        flat = [_flat(snap, "snap")[0] for snap in snapshots]
        arrays.update({key: np.stack([np.asarray(f[key]) for f in flat]) for key in flat[0]})
    meta = {"format": FORMAT, "step": int(np.max(np.asarray(jax.device_get(state.step)))), "members": list(members),
            "logs": list(logs), "n_snapshots": len(snapshots), "train_s": train_s}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays)

    atomic_write(Path(path), write, durable=True)


def load(path: Path, template: Any, members: Sequence[dict], params_template: Any = None) -> Saved:
    """The checkpoint at `path`, checked against this run: `template` is its initial TrainState
    (structure, shapes, dtypes), `members` its hyperparameters, `params_template` the pure dict of
    one snapshot. RunFileError names the file and what is wrong."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except Exception as exc:  # noqa: BLE001  (zip, zlib, JSON, truncation: all mean unreadable)
        raise RunFileError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})", KEEP_HINT) from None
    if meta.get("format") != FORMAT:
        raise RunFileError(path, f"checkpoint format {meta.get('format')}, this version reads {FORMAT}", KEEP_HINT)
    if meta["members"] != json.loads(json.dumps(list(members))):
        raise RunFileError(path, "a checkpoint of other members (their hyperparameters differ from this run's)", KEEP_HINT)

    def restore(template_tree: Any, prefix: str, lead: tuple[int, ...] = ()) -> Any:
        wanted, treedef = _flat(jax.device_get(template_tree), prefix)
        leaves = []
        for key, like in wanted.items():
            got = arrays.get(key)
            shape = (*lead, *np.shape(like))
            if got is None or got.shape != shape or got.dtype != np.asarray(like).dtype:
                have = "missing" if got is None else f"{got.dtype}{list(got.shape)}"
                raise RunFileError(path, f"incompatible checkpoint: {key} is {have}, this run has "
                                         f"{np.asarray(like).dtype}{list(shape)}", KEEP_HINT)
            leaves.append(got)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    state = restore(template, "state")
    steps = [int(s) for s in arrays["steps"]]
    logs = {name: list(arrays[f"log/{name}"]) for name in meta["logs"]}
    snapshots = []
    if meta["n_snapshots"]:
        if params_template is None:
            raise RunFileError(path, "the checkpoint holds snapshots, this run keeps none", KEEP_HINT)
        stacked = restore(params_template, "snap", (meta["n_snapshots"],))
        snapshots = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(meta["n_snapshots"])]
    return Saved(state=state, steps=steps, logs=logs, snapshots=snapshots, train_s=float(meta["train_s"]))
