"""Execute one notebook at its QUICK size: `python execute.py NOTEBOOK.py FOLDER`.

The notebook (jupytext percent format) is read, a cell setting QUICK = True and OUT = FOLDER/runs
is put right after its `parameters` cell (papermill's convention: the injected cell overrides the
defaults), and nbclient runs it in a Jupyter kernel of this Python, with FOLDER as the working
directory. The executed notebook is written to FOLDER/executed.ipynb; a cell that raises exits 1
with that cell's traceback. tests/notebooks/test_notebooks.py runs this in the suite's background
pool, beside the in-process tests."""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbclient
import nbformat
from nbclient.exceptions import CellExecutionError

EXECUTED = "executed.ipynb"


def parameters_index(nb) -> int:
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"a notebook has exactly one cell tagged `parameters` (found {len(tagged)})")
    return tagged[0]


def execute(path: Path, folder: Path) -> None:
    nb = jupytext.read(path)
    injected = (f"QUICK = True\nOUT = {str(folder / 'runs')!r}\n"
                f"import sys as _sys\nassert _sys.prefix == {sys.prefix!r}, _sys.executable  # this environment's kernel")
    nb.cells.insert(parameters_index(nb) + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, folder / EXECUTED)


if __name__ == "__main__":
    try:
        execute(Path(sys.argv[1]), Path(sys.argv[2]))
    except CellExecutionError as exc:
        print(f"{Path(sys.argv[1]).name}: a cell failed:\n{exc}", file=sys.stderr)
        sys.exit(1)
