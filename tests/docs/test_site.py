"""The documentation site and the README, the front door: `mkdocs build --strict` succeeds (no broken
link, anchor or page left out of the nav), the README stays short, keeps CI's set-up commands,
links only to files that exist, and every `toy-quanta` command it shows composes and validates."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETUP_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/toy-quanta",
    'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest',
]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """The text without its fenced code blocks and code spans (where a link is not a link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def commands(text: str, program: str = "toy-quanta") -> list[str]:
    """Every command line of `program` in the README: lines of its code blocks and its code spans."""
    found = [line for block in FENCE.findall(text) for line in block.splitlines()]
    found += CODE_SPAN.findall(FENCE.sub("", text))
    return [c.strip() for c in found if c.strip().split(" ", 1)[0] == program]


def overrides(command: str) -> list[str]:
    """The overrides of a `toy-quanta` command as one job would get them: `-m` dropped and a swept
    key (`key=a,b,c`, comma outside brackets) at its first value."""
    args = shlex.split(command, comments=True)[1:]
    multirun = "-m" in args or "--multirun" in args
    out = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        key, eq, value = arg.partition("=")
        if multirun and eq and "," in value and not value.startswith(("[", "{")):
            arg = f"{key}={value.split(',', 1)[0]}"
        out.append(arg)
    return out


def test_the_site_builds_strictly_with_a_page_per_nav_entry(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, f"STDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}"
    assert (tmp_path / "index.html").is_file()
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = nav_pages(config["nav"])
    assert "index.md" in pages and len(pages) == len(set(pages))
    for page in pages:
        html = tmp_path / ("index.html" if page == "index.md" else Path(page).with_suffix("") / "index.html")
        assert html.is_file(), f"{page}: no {html.relative_to(tmp_path)}"
    # the home page is the README, its links rewritten to the docs directory
    home = (tmp_path / "index.html").read_text()
    assert 'src="grok/grok_modadd_curves.png"' in home and 'href="usage/#the-default-job"' in home


def test_the_readme_is_short_and_starts_with_the_setup_commands():
    text = readme()
    assert len(text.splitlines()) <= 200
    first_block = FENCE.search(text).group(1)
    assert first_block.splitlines() == SETUP_COMMANDS


def test_every_link_and_image_of_the_readme_exists_and_every_page_is_linked():
    targets = LINK.findall(prose(readme()))
    assert len(targets) >= 6 + 10  # six figures, and the pages
    for target in targets:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        assert (ROOT / path).exists(), f"README links to {target}, which does not exist"
    pages = set(nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])) - {"index.md"}
    linked = {t.split("#", 1)[0].removeprefix("docs/") for t in targets}
    assert pages <= linked, f"pages the README does not link to: {sorted(pages - linked)}"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", prose(readme()))
    assert len(images) == 6 and all(t.startswith("docs/") for t in images)


def test_every_command_of_the_readme_names_real_experiments_and_composes():
    from toy_quanta import api, config

    text = readme()
    lines = commands(text)
    named = {m for c in lines for m in re.findall(r"(?:^|\s)experiment=(\w+)", c)}
    assert {"grok_modadd", "omnigrok_mnist", "phase_toy", "induction", "quanta_params"} <= named
    for name in named:
        assert (ROOT / "conf" / "experiment" / f"{name}.yaml").is_file(), f"no conf/experiment/{name}.yaml"
    for command in dict.fromkeys(lines):
        cfg = api.compose(*overrides(command))
        config.validate(cfg)

    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    used = set(re.findall(r"\btoy-quanta(?:-[a-z]+)?\b", text))
    assert used <= scripts, f"commands the README names that are not installed: {used - scripts}"


@pytest.mark.parametrize("command, expected", [
    ("toy-quanta -m experiment=quanta_params", ["experiment=quanta_params"]),
    ("toy-quanta -m model.width=8,16,32   # a sweep", ["model.width=8"]),
    ("toy-quanta ensemble.lr=[1e-3,3e-3]", ["ensemble.lr=[1e-3,3e-3]"]),
])
def test_overrides_take_a_sweeps_first_point(command, expected):
    assert overrides(command) == expected
