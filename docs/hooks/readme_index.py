"""MkDocs hook: the site's home page is README.md, generated at build time so the two never drift.

`on_files` adds a generated `index.md` whose content is README.md with its links and image paths
rewritten from the repository root to the docs directory (`docs/usage.md` -> `usage.md`,
`docs/grok/x.png` -> `grok/x.png`). Only link and image targets change, never code spans or
code blocks. `mkdocs serve` rebuilds when README.md changes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.readme_index")

# An inline link or image target `](docs/...`, a reference definition `[x]: docs/...`, or an HTML
# `src="docs/..."` / `href="docs/..."`; the target may start with `./`.
_TARGET = re.compile(r"""(\]\(\s*<?|^\s*\[[^\]]+\]:\s*<?|\b(?:src|href)=["'])(?:\./)?docs/""", re.M)
_FENCE = re.compile(r"^(```|~~~)")


def readme_path(config) -> Path:
    return Path(config.config_file_path).parent / "README.md"


def rewrite(text: str) -> str:
    """README.md's text with link and image targets under docs/ made relative to docs/ (code
    blocks untouched)."""
    out, fenced = [], False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            line = _TARGET.sub(r"\1", line)
        out.append(line)
    return "".join(out)


def on_files(files: Files, config) -> Files:
    existing = files.get_file_from_path("index.md")
    if existing is not None:
        log.warning("docs/index.md exists; the home page is generated from README.md, so it is ignored")
        files.remove(existing)
    files.append(File.generated(config, "index.md", content=rewrite(readme_path(config).read_text(encoding="utf-8"))))
    return files


def on_serve(server, config, builder):
    server.watch(str(readme_path(config)))
    return server
