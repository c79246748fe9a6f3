"""The ledger's catalogue: every claim is complete and names a registered paper, and every job of
every experiment the claims run composes and validates (composing only, no training)."""

from __future__ import annotations

import pytest

from toy_quanta import api
from toy_quanta.claims.catalogue import claims
from toy_quanta.claims.ledger import PAPERS, VERDICTS, experiments
from toy_quanta.config import validate
from toy_quanta.job import to_config

CLAIMS = claims()
EXPERIMENTS = experiments(list(CLAIMS.values()))


def test_there_are_at_least_24_claims_each_complete():
    assert len(CLAIMS) >= 24
    for c in CLAIMS.values():
        assert c.paper in PAPERS and c.experiments and c.claim and c.paper_value and c.rule and c.page, c.id
        assert c.id == c.id.lower() and " " not in c.id and "." not in c.id, c.id  # an anchor of docs/claims.md
        assert c.cost_s > 0, c.id
    assert len({e.key for e in EXPERIMENTS}) == len(EXPERIMENTS)


@pytest.fixture(scope="module")
def jobs_of() -> dict:
    """Each experiment's jobs (a sweep's expanded as `toy-quanta -m` expands them)."""
    return {e.id: api.sweep_jobs(*e.overrides)[0] if e.sweep else [list(e.overrides)] for e in EXPERIMENTS}


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[e.id for e in EXPERIMENTS])
def test_every_job_of_every_experiment_composes_and_validates(experiment, jobs_of, hydra_compose):
    jobs = jobs_of[experiment.id]
    assert jobs
    for job in jobs:
        validate(to_config(hydra_compose(job)))
    for then in experiment.then:
        assert then.startswith("toy-quanta-") and "{dir}" in then


def test_verdicts_are_the_four_the_ledger_names():
    assert VERDICTS == ("reproduced", "partly", "differs", "not tested here")
