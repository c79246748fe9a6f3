"""The claims ledger: what a paper claims, the runs of this package that test it, how the measured
number is read from them, and the rule that turns it into a verdict.

A claim registers itself (`claim(...)`, from the catalogue's modules, by topic); `toy-quanta-claims`
runs the experiments the selected claims need (each once, however many claims read it), measures
every claim and writes the table (toy_quanta.claims.report).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

VERDICTS = ("reproduced", "partly", "differs", "not tested here")


@dataclass(frozen=True)
class Experiment:
    """Runs of the command line: `toy-quanta [-m] OVERRIDES`, into their own directory."""

    id: str
    overrides: tuple[str, ...]
    sweep: bool = False  # -m: a multirun (hydra.sweep.dir) rather than one job (hydra.run.dir)
    cost_s: float = 0.0  # wall seconds on the reference machine (2 cores, docs/claims.md), measured
    # commands run after it on its directory, `{dir}`: e.g. "toy-quanta-qdg {dir}" (a toy-quanta-* command)
    then: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        """What a user types (DIR: the experiment's directory)."""
        first = "toy-quanta " + ("-m " if self.sweep else "") + " ".join(_quoted(o) for o in self.overrides)
        return " && ".join([first, *(t.format(dir="DIR") for t in self.then)])

    @property
    def key(self) -> str:
        """The directory name: the id and a hash of the commands (changed settings, new runs)."""
        digest = hashlib.sha256(json.dumps([self.sweep, *self.overrides, *self.then]).encode()).hexdigest()[:8]
        return f"{self.id}-{digest}"


def _quoted(override: str) -> str:
    return f"'{override}'" if any(c in override for c in " ,[]{}()*?$") else override


@dataclass
class Measured:
    """What a claim's reader found in the runs."""

    value: float | None  # the headline number (None: a qualitative claim)
    interval: tuple[float, float] | None = None  # its 95% interval, when it has one
    text: str = ""  # the measurement in words, e.g. "0.756 [0.694, 0.827]" or "4 of 4 phases"
    checks: dict[str, bool] = field(default_factory=dict)  # a qualitative rule's conditions, each held or not
    details: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping (per seed, per arm ...)
    figure: Callable[[Path], None] | None = None  # draws the claim's figure into the given PNG path


@dataclass
class Verdict:
    verdict: str  # one of VERDICTS
    reason: str  # why, in one or two sentences, with the numbers

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: one of {VERDICTS}")


Runs = dict[str, Path]  # experiment id -> its directory (a job's, or a sweep's)


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str  # a key of PAPERS
    section: str  # where the paper says it (its section or figure, or its code's file)
    claim: str  # the claim in one sentence
    paper_value: str  # the paper's number, or its qualitative statement
    experiments: tuple[Experiment, ...]
    measure: Callable[[Runs], Measured]
    judge: Callable[[Measured], Verdict]
    rule: str  # the verdict rule in words
    page: str  # the docs page (and anchor) that discusses it
    paper_scale: str = ""  # what the paper's own scale would cost here, or that it needs a GPU
    gpu: bool = False  # whether testing it at the paper's scale needs a GPU

    @property
    def cost_s(self) -> float:
        return sum(e.cost_s for e in self.experiments)


# The papers the claims come from: key -> (short citation, anchor of its entry in docs/references.md)
PAPERS: dict[str, tuple[str, str]] = {}
_CLAIMS: dict[str, Claim] = {}


def paper(key: str, citation: str, anchor: str) -> str:
    PAPERS[key] = (citation, anchor)
    return key


def claim(**fields: Any) -> Claim:
    """Register a claim (ids are unique; its paper must be registered)."""
    c = Claim(**fields)
    if c.id in _CLAIMS:
        raise ValueError(f"claim {c.id} registered twice")
    if c.paper not in PAPERS:
        raise ValueError(f"claim {c.id}: unknown paper {c.paper!r}")
    _CLAIMS[c.id] = c
    return c


def registered() -> dict[str, Claim]:
    """Every claim registered so far, in registration order (toy_quanta.claims.catalogue.claims()
    imports the catalogue first)."""
    return dict(_CLAIMS)


def experiments(selected: list[Claim]) -> list[Experiment]:
    """The experiments the selected claims read, each once, cheapest first."""
    out: dict[str, Experiment] = {}
    for c in selected:
        for e in c.experiments:
            if e.id in out and out[e.id] != e:
                raise ValueError(f"experiment {e.id} is defined twice with different settings")
            out[e.id] = e
    return sorted(out.values(), key=lambda e: e.cost_s)
