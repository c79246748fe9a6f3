"""The paper presets of conf/experiment/ are pinned to the papers' numbers: every row of the tables in
docs/paper-settings.md (experiment, dotted key, paper value, source) is checked against the config
Hydra composes for `experiment=NAME`. The page is the single source of the numbers; composing only,
no training."""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import toy_quanta.cli.app  # noqa: F401  (registers the tasks, the models and the Hydra configs)

PAGE = Path(__file__).resolve().parents[1] / "docs" / "paper-settings.md"
HEADER = ["experiment", "key", "paper value", "source"]
REL_TOL = 1e-9
MIN_ROWS = 3

# Experiments that reproduce a paper's setting and must be pinned by at least MIN_ROWS rows, beyond
# those whose yaml says so in its first comment line (claimed_by_comment).
PAPER_SETTINGS = {"grok_power", "grok_nanda", "omnigrok_mnist", "lu_mnist", "effective_toy", "phase_toy",
                  "paper", "quanta_params_paper", "quanta_data_paper", "quanta_steps_paper", "grokfast_paper",
                  "grokfast_mnist_paper", "collapse", "solvable_emergence", "induction", "solvable_emergence_paper",
                  "hidden_progress"}
# "# Power et al. 2022's setting: ...", "# The paper's headline run ...", "# The paper's data scaling ..."
CLAIM = re.compile(r"^#\s*(?:the paper's\b|[\w-]+ et al\.? \d{4}'s setting\b)", re.I)


def parse_value(cell: str):
    """A table cell as the composed config would hold it (OmegaConf's YAML: 1e-3 is a float)."""
    return OmegaConf.to_container(OmegaConf.create(f"v: {cell.strip().strip('`')}"))["v"]


def page_rows(text: str) -> list[tuple[str, str, object, str]]:
    """(experiment, key, value, source) of every row of every table with the page's header."""
    rows, in_table = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells == HEADER:
            in_table = True
        elif in_table and not all(set(c) <= set("-: ") for c in cells):
            assert len(cells) == 4, f"a row of docs/paper-settings.md without 4 cells: {line!r}"
            experiment, key, value, source = (c.strip("`") for c in cells)
            rows.append((experiment, key, parse_value(value), source))
    return rows


ROWS = page_rows(PAGE.read_text())


def experiment_names() -> set[str]:
    folder = resources.files("toy_quanta.conf").joinpath("experiment")
    return {p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")}


def claimed_by_comment() -> set[str]:
    """Experiments whose yaml's first comment line (after `# @package`) claims a paper's setting."""
    claimed = set()
    for name in experiment_names():
        text = resources.files("toy_quanta.conf").joinpath("experiment", f"{name}.yaml").read_text()
        first = next((line for line in text.splitlines() if line.startswith("#") and "@package" not in line), "")
        if CLAIM.match(first):
            claimed.add(name)
    return claimed


def same(got, want) -> bool:
    if isinstance(want, bool) or isinstance(got, bool) or want is None or got is None:
        return got is want or (type(got) is type(want) and got == want)
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=REL_TOL)
    if isinstance(want, list) and isinstance(got, (list, tuple)):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    return type(got) is type(want) and got == want


_ABSENT = object()


@pytest.fixture(scope="module")
def composed():
    """experiment name -> its composed config (each composed once)."""
    cache: dict = {}
    with initialize_config_module(config_module="toy_quanta.conf", version_base=None):
        def get(name: str):
            if name not in cache:
                cache[name] = compose("config", overrides=[f"experiment={name}"])
            return cache[name]
        yield get


# --- the page itself ---------------------------------------------------------------------------

def test_the_page_has_tables_and_unique_rows():
    assert len(ROWS) >= 50, "docs/paper-settings.md: its tables were not found"
    pairs = [(e, k) for e, k, _, _ in ROWS]
    duplicates = {p for p in pairs if pairs.count(p) > 1}
    assert not duplicates, f"rows given twice: {sorted(duplicates)}"
    assert all(source for *_, source in ROWS), "every row names its source"
    # every source points into docs/references.md, at an entry that exists
    anchors = set(re.findall(r"\{#([a-z0-9-]+)\}", (PAGE.parent / "references.md").read_text()))
    bad = sorted({source for *_, source in ROWS if not source.startswith("references.md#")
                  or source.removeprefix("references.md#").split(":")[0] not in anchors})
    assert not bad, f"sources that name no entry of docs/references.md: {bad[:5]}"


def test_every_row_names_an_existing_experiment():
    unknown = sorted({e for e, *_ in ROWS} - experiment_names())
    assert not unknown, f"rows name experiments with no conf/experiment/NAME.yaml: {unknown}"


def test_the_comment_detector_finds_the_known_paper_settings():
    assert {"grok_power", "grok_nanda", "paper", "quanta_params_paper", "quanta_data_paper",
            "quanta_steps_paper"} <= claimed_by_comment()


def test_every_paper_setting_is_pinned_by_enough_rows():
    counts = {name: sum(e == name for e, *_ in ROWS) for name in PAPER_SETTINGS | claimed_by_comment()}
    few = {name: n for name, n in counts.items() if n < MIN_ROWS}
    assert not few, f"paper settings with fewer than {MIN_ROWS} rows in docs/paper-settings.md: {few}"


def test_the_value_comparison_is_strict():
    assert same(1e-3, 0.001) and same(100000, 100000) and same([1.0, 8.0], [1.0, 8.0]) and same(None, None)
    assert not same(1.1e-3, 1e-3) and not same([1.0, 8.0], [1.0, 8.5]) and not same([1.0], [1.0, 8.0])
    assert not same(0.0, None) and not same(False, 0) and not same(True, 1.0) and not same("adam", "adamw")
    assert parse_value("1e-3") == 0.001 and parse_value("[1.0, 8.0]") == [1.0, 8.0] and parse_value("null") is None
    assert parse_value("false") is False and parse_value("optim.lr") == "optim.lr" and parse_value("500") == 500


# --- every row against the composed config ------------------------------------------------------

@pytest.mark.parametrize("experiment,key,value,source", ROWS, ids=[f"{e}:{k}" for e, k, _, _ in ROWS])
def test_composed_value_is_the_papers(composed, experiment, key, value, source):
    got = OmegaConf.select(composed(experiment), key, default=_ABSENT)
    assert got is not _ABSENT, f"experiment={experiment}: no key {key} in the composed config"
    if OmegaConf.is_config(got):
        got = OmegaConf.to_container(got)
    assert same(got, value), (f"experiment={experiment}: {key} composes to {got!r}, the paper's value is {value!r} "
                              f"({source}; docs/paper-settings.md)")
