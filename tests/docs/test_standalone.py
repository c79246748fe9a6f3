"""The project stands alone: a clone has no folder beside it, so no tracked file outside tests/
may send a reader to one (`../shared`, `shared/reference`); papers are cited from
docs/references.md."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ("../shared", "shared/reference", "/work/")


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        names = listed.stdout.splitlines()
    else:  # not a git checkout (an unpacked archive): every file but the virtual environment's
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts
                 and ".git" not in p.parts]
    return [ROOT / n for n in names if not n.startswith("tests/")]


def test_no_tracked_file_outside_the_tests_names_a_path_outside_the_repository():
    found = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # figures and other binary files
        for i, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in OUTSIDE):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not found, "\n".join(found)
