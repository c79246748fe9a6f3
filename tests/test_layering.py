"""The layout's rules, checked on the source: no import cycle among the package's modules
(imports inside functions count, `if TYPE_CHECKING:` ones do not), no branch on a task's name
outside toy_quanta/tasks/, and one module that defines a trainer (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_BRANCH = re.compile(r"\b(task|t)\.name\s*(==|!=|in\b)|name\s*==\s*\"(sparse_parity|modular|symbol_add|mnist|"
                         r"teacher_student|induction)\"")


def modules() -> dict[str, Path]:
    out = {}
    for base in ("toy_quanta", "hydra_plugins"):
        for f in (ROOT / base).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules `name` imports, anywhere in it but under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skip = {id(x) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for x in ast.walk(node)}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def test_no_import_cycle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_no_branch_on_a_task_name_outside_the_tasks():
    found = [f"{path.relative_to(ROOT)}:{i}" for name, path in modules().items() if ".tasks" not in name
             for i, line in enumerate(path.read_text().splitlines(), 1)
             if TASK_BRANCH.search(line) and not line.strip().startswith("#")]
    assert not found, found


def test_one_trainer_module():
    trainers = [p.relative_to(ROOT).as_posix() for p in modules().values()
                if re.search(r"^def make_\w*train\b", p.read_text(), re.M)]
    assert trainers == ["toy_quanta/engine/train.py"]
