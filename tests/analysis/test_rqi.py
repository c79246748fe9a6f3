"""RQI (toy_quanta.analysis.rqi): parallelograms against brute force; planted perfect and random embeddings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from toy_quanta.analysis import rqi


def _brute_force(p: int, op: str, modulus: int | None) -> set:
    sign = rqi.SIGNS[op]
    pairs = [(a, b) for a in range(p) for b in range(p) if op != "add" or a <= b]
    value = lambda a, b: (a + sign * b) % modulus if modulus else a + sign * b  # noqa: E731
    trivial = lambda x, y: op == "sub" and x[0] == x[1] and y[0] == y[1]  # noqa: E731
    return {frozenset([x, y]) for x, y in itertools.combinations(pairs, 2) if value(*x) == value(*y) and not trivial(x, y)}


@pytest.mark.parametrize("p,op,modulus", [(7, "add", 7), (6, "add", None), (5, "sub", 5), (10, "add", None)])
def test_parallelograms_against_brute_force(p, op, modulus):
    quads = rqi.parallelograms(p, op, modulus)
    found = {frozenset([(a, b), (c, d)]) for a, b, c, d in quads}
    assert len(found) == len(quads)  # no repeats
    assert found == _brute_force(p, op, modulus)


def test_liu_et_al_toy_counts():
    """p = 10 symbols, unordered pairs: 55 pairs; sums 0..18 with 1,1,2,2,...,5,5,...,1 pairs."""
    sizes = [min(s, 18 - s) // 2 + 1 for s in range(19)]
    assert sum(sizes) == 55
    assert len(rqi.parallelograms(10, "add")) == sum(n * (n - 1) // 2 for n in sizes)


def _rotate(x: np.ndarray, d: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return np.pad(x, ((0, 0), (0, d - x.shape[1]))) @ q


def test_a_linear_embedding_is_perfect_and_a_random_one_is_not():
    quads = rqi.parallelograms(10, "add")
    linear = _rotate(np.arange(10.0)[:, None] * 3 + 1, d=8)
    assert rqi.rqi(linear, quads) == 1.0
    assert rqi.rqi(np.random.default_rng(1).normal(size=(10, 8)), quads) < 0.05
    # within the tolerance, not exactly: small noise keeps RQI at 1, large noise brings it down
    noisy = lambda s: linear + s * np.random.default_rng(2).normal(size=linear.shape)  # noqa: E731
    assert rqi.rqi(noisy(1e-3), quads) == 1.0 and rqi.rqi(noisy(0.5), quads) < 0.2


def test_a_linear_embedding_fails_the_modular_parallelograms_that_wrap():
    p = 11
    quads = rqi.parallelograms(p, "add", modulus=p)
    wraps = np.mean((quads[:, 0] + quads[:, 1] >= p) != (quads[:, 2] + quads[:, 3] >= p))
    linear = _rotate(np.arange(p, dtype=float)[:, None], d=4)
    assert rqi.rqi(linear, quads) == pytest.approx(1 - wraps)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_a_ring_in_the_order_of_any_multiple_is_perfect_for_ring_rqi(op):
    p = 37
    quads = rqi.parallelograms(p, op, modulus=p)
    for k in (1, 5, 18):
        angle = 2 * np.pi * k * np.arange(p) / p
        ellipse = np.stack([3 * np.cos(angle), 0.5 * np.sin(angle)], 1)
        assert rqi.ring_rqi(_rotate(ellipse + 7, d=16, seed=k), quads, op) == 1.0
    random = rqi.ring_rqi(np.random.default_rng(3).normal(size=(p, 16)), quads, op)
    assert random == pytest.approx(np.sqrt(0.01) / np.pi, abs=0.015)


def test_bad_op_is_refused():
    with pytest.raises(ValueError, match="op='mul'"):
        rqi.parallelograms(5, "mul")
