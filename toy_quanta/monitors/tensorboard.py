"""TensorBoard event files of a job (train.tensorboard=true; a monitor: toy_quanta.hooks), to
watch a run live and compare a sweep's jobs side by side: `tensorboard --logdir outputs` (or a
multirun's folder).

Under the job's `tensorboard/`: one run per member (`m03_seed=1_optim.lr=0.001`: its index, then
the per-member values that differ between members), every logged metric at every log step, and a
run `figures` with the job's figures (every PNG in its directory) as images at the end. A
per-subtask (or per-head) metric is one scalar per index, `subtask_test_loss/07`, up to
monitors.MAX_PER_METRIC of them; the full table is metrics.parquet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from PIL import Image
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from toy_quanta.monitors import member_scalars, run_names

TENSORBOARD_DIR = "tensorboard"
FIGURES_RUN = "figures"


class TensorBoardLog:
    """Writes a job's log steps as they come (`scalars`, called after each log step with the run
    so far) and its figures at the end (`figures`). A resumed run first marks the restart, so that
    TensorBoard drops what the stopped run logged after its checkpoint."""

    def __init__(self, job_dir: Path, members: Sequence[dict[str, Any]]):
        self.root = Path(job_dir) / TENSORBOARD_DIR
        self.names = run_names(members)
        self.writers: list[EventFileWriter] | None = None
        self.written = 0  # log steps of the run already written

    def _open(self, resumed_from: int | None, steps: Sequence[int]) -> None:
        self.writers = [EventFileWriter(str(self.root / name)) for name in self.names]
        if resumed_from is not None:
            # TensorBoard's reader drops every earlier event at a step >= a START's step.
            self._add_all(Event(wall_time=time.time(), step=resumed_from + 1,
                                session_log=SessionLog(status=SessionLog.START)))
            self.written = sum(1 for s in steps if s <= resumed_from)

    def scalars(self, result: Any) -> None:
        """Every log step of `result` (engine.loop.FitResult) not written yet."""
        if self.writers is None:
            self._open(result.resumed_from, result.steps)
        now = time.time()
        for j in range(self.written, len(result.steps)):
            step = int(result.steps[j])
            for i, writer in enumerate(self.writers):
                values = [Summary.Value(tag=tag, simple_value=value) for tag, value in member_scalars(result, j, i).items()]
                writer.add_event(Event(wall_time=now, step=step, summary=Summary(value=values)))
        self.written = len(result.steps)
        for writer in self.writers:
            writer.flush()

    def figures(self, paths: Sequence[Path], step: int) -> None:
        """The job's figures (PNG files in the job's directory) as images, in the run `figures`,
        each tagged by its path there without the suffix (progress/fourier)."""
        values = []
        for path in paths:
            with Image.open(path) as image:
                width, height = image.size
                channels = len(image.getbands())
            tag = Path(path).relative_to(self.root.parent).with_suffix("").as_posix()
            values.append(Summary.Value(tag=tag, image=Summary.Image(
                height=height, width=width, colorspace=channels, encoded_image_string=Path(path).read_bytes())))
        if values:
            writer = EventFileWriter(str(self.root / FIGURES_RUN))
            writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
            writer.close()

    def _add_all(self, event: Event) -> None:
        for writer in self.writers:
            writer.add_event(event)

    def close(self, failed: bool = False) -> None:
        for writer in self.writers or ():
            writer.close()
        self.writers = None
