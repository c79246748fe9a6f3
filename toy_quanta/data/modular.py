"""Binary operations mod p for grokking experiments (Power et al. 2022).

The dataset is the full table of pairs (a, b) in [0, p)^2 where `a op b` is defined, with
c = a op b mod p. A random fraction of the table is the training set, the rest validation.
Tables are computed once on the host with NumPy; only the train/validation mask runs on the
device, so an ensemble can hold members with different training fractions.

A transformer reads the sequence [a, OP, b, EQ] and predicts c at the last position (EQ).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toy_quanta.errors import ConfigError

# The split is drawn from its own stream, so it never shares draws with the init or data streams
# that derive from the same seed.
_SPLIT_STREAM = 0x6D0D5

# train_mask computes round(fraction * N) in float32 on the device; N must be exact in float32
# (N <= 2^24) for the count to match the host. p = 4096 gives N = 2^24.
P_MAX = 4096

VOCAB_EXTRA = 2  # the op token (id p) and the equals token (id p + 1)
SEQ_LEN = 4  # [a, OP, b, EQ]


class Op(NamedTuple):
    """A binary operation mod p: its formula, whether it needs a modular inverse, and
    fn(a_N, b_N, p) -> (c_N, defined_N), vectorised over int64 arrays."""

    formula: str
    needs_prime: bool
    fn: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _mul(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    """x * y mod p on int64; reducing both factors first keeps the product below p^2 < 2^63."""
    return (x % p) * (y % p) % p


def _inverse(b_N: np.ndarray, p: int) -> np.ndarray:
    """b^(p-2) mod p by square-and-multiply: the inverse of b != 0 when p is prime (Fermat)."""
    result_N = np.ones_like(b_N)
    base_N = b_N % p
    e = p - 2
    while e > 0:
        if e & 1:
            result_N = _mul(result_N, base_N, p)
        base_N = _mul(base_N, base_N, p)
        e >>= 1
    return result_N


def _everywhere(f: Callable[[np.ndarray, np.ndarray, int], np.ndarray]):
    """Wrap an op that is defined on every pair."""

    def fn(a_N, b_N, p):
        a_N, b_N = np.asarray(a_N, np.int64), np.asarray(b_N, np.int64)
        return f(a_N, b_N, p) % p, np.ones(a_N.shape, bool)

    return fn


def _div(a_N, b_N, p):
    a_N, b_N = np.asarray(a_N, np.int64), np.asarray(b_N, np.int64)
    defined_N = b_N % p != 0
    # c = a * b^-1, i.e. the c with a = b * c (how Power et al. built it); 0 where b = 0 (undefined).
    return np.where(defined_N, _mul(a_N, _inverse(b_N, p), p), 0), defined_N


def _mixed(a_N, b_N, p):
    a_N, b_N = np.asarray(a_N, np.int64), np.asarray(b_N, np.int64)
    # b = 0 is even, so every pair is defined; an odd b is never 0, so its inverse exists.
    odd_N = b_N % 2 == 1
    return np.where(odd_N, _mul(a_N, _inverse(b_N, p), p), (a_N - b_N) % p), np.ones(a_N.shape, bool)


OPS: dict[str, Op] = {
    "add": Op("a + b", False, _everywhere(lambda a, b, p: a + b)),
    "sub": Op("a - b", False, _everywhere(lambda a, b, p: a - b)),
    "mul": Op("a * b", False, _everywhere(lambda a, b, p: _mul(a, b, p))),
    "div": Op("a / b (b != 0)", True, _div),
    "sq_add": Op("a^2 + b^2", False, _everywhere(lambda a, b, p: _mul(a, a, p) + _mul(b, b, p))),
    "quad": Op("a^2 + ab + b^2", False, _everywhere(lambda a, b, p: _mul(a, a, p) + _mul(a, b, p) + _mul(b, b, p))),
    "quad_a": Op(
        "a^2 + ab + b^2 + a", False, _everywhere(lambda a, b, p: _mul(a, a, p) + _mul(a, b, p) + _mul(b, b, p) + a)
    ),
    "cube_ab": Op("a^3 + ab", False, _everywhere(lambda a, b, p: _mul(_mul(a, a, p), a, p) + _mul(a, b, p))),
    "cube_ab2": Op(
        "a^3 + ab^2 + b", False, _everywhere(lambda a, b, p: _mul(_mul(a, a, p), a, p) + _mul(a, _mul(b, b, p), p) + b)
    ),
    "mixed": Op("a / b if b is odd else a - b", True, _mixed),
}


def is_prime(p: int) -> bool:
    """Whether the integer p is prime (trial division; p is at most a few thousand here)."""
    if p < 2:
        return False
    return all(p % d for d in range(2, math.isqrt(p) + 1))


def _check_op_p(op: str, p: int) -> None:
    if op not in OPS:
        raise ConfigError("task.op", op, "one of " + ", ".join(OPS))
    if isinstance(p, bool) or not isinstance(p, numbers.Integral) or not 2 <= p <= P_MAX:
        raise ConfigError("task.p", p, f"an integer with 2 <= p <= {P_MAX} (p*p pairs must be exact in float32)")
    if OPS[op].needs_prime and not is_prime(int(p)):
        why = "it divides, and b^-1 mod p exists for every b != 0 only if p is prime"
        raise ConfigError("task.p", p, f"a prime for task.op={op} ({OPS[op].formula}): {why}")


def check(op: str, p: int, train_fraction: float) -> None:
    """Raise ConfigError for an unknown op, a bad modulus or a training fraction outside (0, 1)."""
    _check_op_p(op, p)
    f = train_fraction
    if isinstance(f, bool) or not isinstance(f, numbers.Real) or not math.isfinite(f) or not 0 < f < 1:
        raise ConfigError("task.train_fraction", f, "a finite number in the open interval (0, 1)")


def table(op: str, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair where `a op b` is defined, row-major (a, then b): int32 (a_N, b_N, c_N).

    N = p*p, or p*(p-1) for div (b = 0 excluded).
    """
    _check_op_p(op, p)
    p = int(p)
    a_N, b_N = np.divmod(np.arange(p * p, dtype=np.int64), p)
    c_N, defined_N = OPS[op].fn(a_N, b_N, p)
    return tuple(x[defined_N].astype(np.int32) for x in (a_N, b_N, c_N))


def split_rank(n_pairs: int, split_seed: int) -> np.ndarray:
    """A random rank of each pair, int32 (N,): a pair is in the training set iff its rank < n_train.

    A rank (not a shuffled index list) lets the split be a comparison, vectorisable over fractions,
    and makes the training set of a smaller fraction a subset of a larger one's.
    """
    rng = np.random.default_rng([split_seed, _SPLIT_STREAM])
    return rng.permutation(n_pairs).astype(np.int32)


def _count(fraction, n_pairs: int, xp):
    # float32 on host and device alike, so both round the same product (ties go to even in both).
    count = xp.round(xp.asarray(fraction, xp.float32) * xp.float32(n_pairs))
    return xp.clip(count, 1, n_pairs - 1)


def train_mask(rank_N: jax.Array, fraction: jax.Array | float) -> jax.Array:
    """Boolean (N,): the training pairs, rank < round(fraction * N) clipped to [1, N-1].

    `fraction` may be traced (jit, vmap over members with different fractions).
    """
    n_pairs = rank_N.shape[0]
    return jnp.asarray(rank_N) < _count(fraction, n_pairs, jnp).astype(jnp.int32)


def n_train(n_pairs: int, fraction: float) -> int:
    """The number of training pairs train_mask selects, computed on the host."""
    return int(_count(fraction, n_pairs, np))


def vocab_size(p: int) -> int:
    """p residues, then the op token (id p) and the equals token (id p + 1)."""
    return p + VOCAB_EXTRA


def sequences(a_N: np.ndarray, b_N: np.ndarray, p: int) -> np.ndarray:
    """Token sequences [a, OP, b, EQ], int32 (N, 4); the answer c is predicted at EQ."""
    a_N, b_N = np.asarray(a_N, np.int32), np.asarray(b_N, np.int32)
    op_N = np.full_like(a_N, p)
    eq_N = np.full_like(a_N, p + 1)
    return np.stack([a_N, op_N, b_N, eq_N], axis=1)
