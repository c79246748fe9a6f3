"""toy-quanta-config-reference (toy_quanta.cli.reference): docs/configuration.md is what the code
generates, names every key of every structured config, and its "allowed" column is what
validation says on the command line's path."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from toy_quanta import api, config, registry
from toy_quanta.cli import reference
from toy_quanta.errors import ConfigError
from toy_quanta.job import to_config

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def page() -> str:
    return reference.render()


def rows(text: str) -> dict[str, list[str]]:
    """key -> its row's cells (type, default, allowed, meaning), from every table of the page."""
    out = {}
    for line in text.splitlines():
        match = re.match(r"^\| `([\w.]+)` \| (.*) \|$", line)
        if match and "." in match.group(1) or (match and match.group(1) in ("seed", "name", "tasks_module")):
            out.setdefault(match.group(1), re.split(r"(?<!\\) \| ", match.group(2)))
    return out


def test_the_committed_page_is_the_generated_one(page):
    assert PAGE.read_text() == page, "docs/configuration.md is out of date: toy-quanta-config-reference > docs/configuration.md"


def test_every_key_of_every_config_is_in_the_page(page):
    found = rows(page)
    classes = [(config.OptimConfig, "optim."), (config.TrainConfig, "train."), (config.EnsembleConfig, "ensemble."),
               (config.PhaseConfig, "phase.")]
    classes += [(t.config, "task.") for t in registry.tasks().values()]
    classes += [(m.config, "model.") for m in registry.models().values()]
    for cls, prefix in classes:
        for f in dataclasses.fields(cls):
            if f.name != "name":
                assert prefix + f.name in found, f"{prefix}{f.name} ({cls.__name__}) is not in the reference"
    assert {"seed", "name", "tasks_module"} <= set(found)


@pytest.mark.parametrize("override", ["optim.lr=-1", "train.steps=0", "optim.schedule=cosine_restarts",
                                      "task.loss=l1", "optim.b2=1.5", "task.alpha=-1", "ensemble.seeds=0"])
def test_allowed_is_what_the_command_line_is_told(page, override):
    """The command line's path (Hydra compose, the typed config, validate) refuses the value with
    a message that the reference's allowed cell for that key gives."""
    key = override.partition("=")[0]
    with pytest.raises(ConfigError) as caught:
        config.validate(to_config(api.compose(override)))
    assert caught.value.key == key
    # the page drops a message that begins another one (">= 1" within ">= 1 and < 2^31 ...")
    assert any(part.startswith(caught.value.allowed) for part in rows(page)[key][2].split("; "))


def test_the_tasks_defaults_and_models_are_listed(page):
    for name, task in registry.tasks().items():
        section = page.split(f"### `task={name}`")[1].split("### ")[0]
        assert f"Models: {', '.join(f'`model={m}`' for m in task.models)}." in section
    assert rows(page)["train.steps"][1] == f"`{config.TrainConfig().steps}`"


def test_comments_above_and_beside_a_field_are_its_meaning():
    @dataclass
    class Example:
        # two lines
        # above
        a: int = 1  # and beside
        b: Optional[float] = None
        c: str = "x"  # only beside
        # lost: a blank line follows

        d: bool = False

    assert reference.comments(Example) == {"a": "two lines above and beside", "b": "", "c": "only beside", "d": ""}
    assert reference.type_name(Optional[list[float]]) == "list of float or null"


def test_check_fails_on_a_stale_page(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(reference.render().replace("train.steps", "train.stepz"))
    assert reference.main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert reference.main(["--check", str(PAGE)]) == 0
