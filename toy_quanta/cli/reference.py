"""`toy-quanta-config-reference`: the configuration reference (docs/configuration.md), generated
from the structured configs so that it cannot drift from the code.

    toy-quanta-config-reference > docs/configuration.md
    toy-quanta-config-reference --check docs/configuration.md   # exit 1 if it is out of date

Every key with its type, default and meaning (the comments beside the field in the source), and
what is allowed: the text of the ConfigError that validation raises when the key holds a value
no check accepts, found by trying such values on a valid config (so it is the check's own words).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.resources
import inspect
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

from toy_quanta import config, registry
from toy_quanta.checks import INT_END
from toy_quanta.config import Config, OptimConfig, QDGConfig, validate, validate_qdg
from toy_quanta.errors import ConfigError

_NOT_ALLOWED = object()
_FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+?(?:=[^#]*)?(?:#\s?(.*))?$")


# --- what a field is: type, default, comment ---------------------------------------------------

def comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class's source: the comment lines just above it and the one
    after it on its line."""
    found, above = {}, []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and not stripped.startswith(("def ", "@", '"""')):
            found[match.group(1)] = " ".join([*above, match.group(2) or ""]).strip()
        above = []
    return found


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in inner) + (" or null" if len(inner) < len(args) else "")
    if origin in (list, Sequence, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "???"


def shown(value: Any) -> str:
    """A value as one writes it on the command line (YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}" if value else "{}"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


# --- what is allowed: the check's own words ------------------------------------------------------

def _probes(tp: Any) -> list[Any]:
    """Values a check of this type is expected to refuse, most telling first."""
    tp = _bare(tp)
    if tp is bool:
        return ["not-a-bool"]
    if tp is int:
        return [-1, 0, INT_END, 10**6]
    if tp is float:
        return [math.nan, -1.0, 0.0, 2.0]
    if tp is str:
        return ["\u2205not-an-option"]
    if typing.get_origin(tp) in (list, Sequence):
        return [["\u2205"], [-1], []]
    return []


def allowed(base: Any, key: str, tp: Any, check: Callable[[Any], None]) -> str:
    """What `check` says is allowed for `key`: the distinct messages of the probe values it refuses
    under that key. A key no check restricts gets its type's range."""
    said: list[str] = []
    for value in _probes(tp):
        cfg = copy.deepcopy(base)
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
        try:
            check(cfg)
        except ConfigError as exc:
            if exc.key == key and exc.allowed not in said:
                said.append(exc.allowed)
        except Exception:  # noqa: BLE001  (a value no check expected: says nothing about the key)
            continue
    said = [m for m in said if not any(o != m and o.startswith(m) for o in said)]  # ">= 1" within ">= 1 and < 2^31"
    return "; ".join(said) or _UNCHECKED.get(_bare(tp), "")


_NODES = ("task", "model", "optim", "train", "ensemble", "phase")  # Config's fields that hold configs
_UNCHECKED = {bool: "true or false", int: "any integer", float: "any number", str: "any string"}


def _bare(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is typing.Union else [tp]
    return args[0] if len(args) == 1 else tp


# --- the page -------------------------------------------------------------------------------------

def table(cls: type, base: Any, prefix: str, check: Callable[[Any], None] | None) -> list[str]:
    hints = typing.get_type_hints(cls)
    notes = comments(cls)
    rows = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if f.name == "name" and prefix in ("task.", "model.", "optim."):
            continue  # the group option itself
        if cls is Config and f.name in _NODES:
            continue  # a group or a node: its keys have their own table
        key = prefix + f.name
        what = allowed(base, key, hints[f.name], check) if check is not None and base is not None else ""
        rows.append("| " + " | ".join(_cell(c) for c in (
            f"`{key}`", type_name(hints[f.name]), f"`{shown(default_of(f))}`", what, notes.get(f.name, ""))) + " |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _doc(cls: type) -> list[str]:
    doc = inspect.getdoc(cls) or ""
    own = not doc.startswith(cls.__name__ + "(")  # dataclasses make up a signature when there is none
    return [" ".join(doc.split()), ""] if doc and own else []


def base_config(task_name: str, model_name: str) -> Config | None:
    """The dataclass defaults of the task and the model, validated; None if they do not validate
    together (the table then has no allowed column)."""
    cfg = Config(task=registry.task(task_name).config(), model=registry.model(model_name).config(),
                 optim=OptimConfig())
    try:
        validate(cfg)
    except ConfigError:
        return None
    return cfg


def _with_phase(cfg: Config) -> Config:
    """A valid config with a phase diagram, so that the phase keys are checked."""
    cfg = copy.deepcopy(cfg)
    cfg.phase.x, cfg.phase.y = "optim.lr", "optim.weight_decay"
    cfg.ensemble.lr, cfg.ensemble.weight_decay = [1e-3, 1e-2], [0.0, 1.0]
    validate(cfg)
    return cfg


def experiments() -> list[tuple[str, str]]:
    """(name, the first sentence of its header comment) of every conf/experiment file."""
    out = []
    folder = importlib.resources.files("toy_quanta.conf") / "experiment"
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("#") or (header and not line.strip("# ")):
                break
            if "@package" not in line and line.strip("# "):
                header.append(line.lstrip("#").strip())
        text = " ".join(header)
        out.append((path.name.removesuffix(".yaml"), re.split(r"(?<!\bal)\.\s(?=[A-Z])", text)[0].rstrip(".") + "." if text else ""))
    return out


def render() -> str:
    tasks, models = registry.tasks(), registry.models()
    default = base_config("sparse_parity", "mlp")
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `toy-quanta-config-reference > docs/configuration.md` from the structured",
        "configs (toy_quanta/config.py, each task's and model's config class). Do not edit by hand:",
        "tests/cli/test_reference.py fails when this page and the code differ. -->",
        "",
        "Every key of `toy-quanta`, with its type, its default, what is allowed and what it means. A key is",
        "set on the command line (`toy-quanta model.width=64 optim.lr=3e-3`), in an experiment file",
        "(`conf/experiment/NAME.yaml`, then `toy-quanta experiment=NAME`), or swept (`toy-quanta -m",
        "model.width=16,32`). *Allowed* is what validation answers when a value breaks the rule, in its",
        "own words; a bad value stops the job with that message before anything compiles. Defaults are",
        "the config classes' own; `conf/config.yaml` and the experiment files override some of them",
        "(`toy-quanta --cfg job` prints the composed config of any command line).",
        "",
        "## Groups",
        "",
        "| group | options | default |",
        "| --- | --- | --- |",
        f"| `task` | {', '.join(f'`{n}`' for n in tasks)} | `sparse_parity` |",
        f"| `model` | {', '.join(f'`{n}`' for n in models)} | the task's first (below) |",
        f"| `optim` | {', '.join(f'`{n}`' for n in config.OPTIMIZERS)} | `adam` |",
        "| `experiment` | one per file in `conf/experiment/` (below) | `demo` |",
        "| `collapse_fix`, `alpha_scan` | the collapse and quanta_alpha experiments' sweeps | |",
        "| `hydra/launcher` | `vmap` (ours), `joblib`, `submitit_local`, `submitit_slurm`, "
        "`vmap_submitit_local`, `vmap_submitit_slurm` (the `cluster` extra), `ray` | `basic` |",
        "",
        "## Experiments",
        "",
        "| `experiment=` | what it runs |",
        "| --- | --- |",
        *(f"| `{name}` | {_cell(line)} |" for name, line in experiments()),
        "",
        "## Core keys",
        "",
    ]
    for title, cls, prefix in (("Top level", Config, ""), ("`optim`", OptimConfig, "optim."),
                               ("`train`", config.TrainConfig, "train."),
                               ("`ensemble`", config.EnsembleConfig, "ensemble."),
                               ("`phase`", config.PhaseConfig, "phase.")):
        rows = table(cls, _with_phase(default) if prefix == "phase." else default, prefix, validate)
        out += [f"### {title}", "", *_doc(cls), *rows, ""]
    out += ["## Tasks", "", "`task=NAME` picks the task; its keys are `task.*`. The models listed are the ones it can train.", ""]
    for name, task in tasks.items():
        base = base_config(name, task.models[0])
        own = ", ".join(f"`ensemble.{list_name}=[...]` varies `{key}`" for key, (list_name, _) in task.member_keys.items())
        out += [f"### `task={name}`", "", *_doc(task.config),
                f"Models: {', '.join(f'`model={m}`' for m in task.models)}.", "",
                *([f"Per member, in one program (its own ensemble lists, each value validated as the key): {own}.", ""]
                  if own else []),
                *table(task.config, base, "task.", validate), ""]
    out += ["## Models", "", "`model=NAME` picks the model; its keys are `model.*`.", ""]
    for name, model in models.items():
        task_name = next((t for t, task in tasks.items() if name in task.models), None)
        base = None
        if task_name is not None:
            base = base_config(task_name, name)
            if base is not None:
                base.task = registry.task(task_name).config()
        out += [f"### `model={name}`", "", *_doc(model.config), *table(model.config, base, "model.", validate), ""]
    qdg = QDGConfig(run_dir="run")
    out += ["## `toy-quanta-qdg`", "", *_doc(QDGConfig), *table(QDGConfig, qdg, "", validate_qdg), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toy-quanta-config-reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", metavar="FILE", help="exit 1 if FILE differs from the generated reference")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if Path(args.check).read_text() != text:
            print(f"{args.check} is out of date: run `toy-quanta-config-reference > {args.check}`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
