"""Every notebook in notebooks/ runs, at its QUICK size, in a Jupyter kernel of this environment.

tests/notebooks/execute.py runs each (a cell setting QUICK = True and OUT = a temporary folder put
right after its `parameters` cell, then nbclient), as a subprocess in the suite's background pool
(conftest: beside the in-process tests, on the other core); a cell that raises fails the test with
that cell's traceback. The structure every notebook promises is checked too: it opens with what
to look for, ends with its figure and questions for a student, and trains only through the
package's API.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jupytext  # the test extra has it (and nbclient, ipykernel): a missing one fails the suite
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
# Training code belongs to the package: a notebook imports neither the engine nor JAX's optimisers.
FORBIDDEN = ("toy_quanta.engine", "from toy_quanta import engine", "import optax", "jax.grad", "jax.value_and_grad")


RUNNER = Path(__file__).with_name("execute.py")
_spec = importlib.util.spec_from_file_location("notebook_runner", RUNNER)
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)
EXECUTED, parameters_index = runner.EXECUTED, runner.parameters_index
KERNEL_ENV = {"JAX_PLATFORMS": "cpu", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def background_runs(items, tmp_path_factory) -> dict:
    """Each selected notebook executed by execute.py in a subprocess: (folder, completed process)."""
    wanted = {item.callspec.params["path"].stem for item in items
              if item.originalname == "test_notebook_runs_quick" and hasattr(item, "callspec")}
    jobs = {}
    for path in NOTEBOOKS:
        if path.stem in wanted:
            folder = tmp_path_factory.mktemp(f"notebook_{path.stem}")
            jobs[path.stem] = lambda path=path, folder=folder: (folder, subprocess.run(
                [sys.executable, str(RUNNER), str(path), str(folder)], capture_output=True, text=True, timeout=900,
                env={**os.environ, **KERNEL_ENV}))
    return jobs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_structure(path):
    nb = jupytext.read(path)
    first, last, figure = nb.cells[0], nb.cells[-1], nb.cells[-2]
    assert first.cell_type == "markdown" and "What to look for" in first.source
    assert last.cell_type == "markdown" and "Questions" in last.source
    assert figure.cell_type == "code", "the cell before the questions draws the final figure"
    params = nb.cells[parameters_index(nb)]
    assert params.cell_type == "code" and "QUICK" in params.source and "OUT" in params.source
    for line in params.source.splitlines():  # only simple assignments (papermill overrides them)
        code = line.split("#")[0].strip()
        assert not code or ("=" in code and code.split("=")[0].strip().isidentifier()), line
    for cell in nb.cells:
        for word in FORBIDDEN:
            assert word not in cell.source, f"{path.name}: {word!r} (train through toy_quanta.api)"
    assert "toy_quanta.api" in "".join(c.source for c in nb.cells) or "from toy_quanta import api" in "".join(
        c.source for c in nb.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_quick(path, background):
    folder, proc = background[path.stem].result()
    assert proc.returncode == 0, f"{path.name}:\n{proc.stderr[-6000:]}"
    nb = nbformat.read(folder / EXECUTED, as_version=4)
    final = nb.cells[-2]
    assert any("image/png" in out.get("data", {}) for out in final.outputs), \
        f"{path.name}: the final figure cell shows no image"
    written = {p.relative_to(folder).parts[0] for p in folder.rglob("*") if p.is_file()}
    assert written <= {"runs", EXECUTED}, f"{path.name} wrote outside OUT: {written - {'runs', EXECUTED}}"
