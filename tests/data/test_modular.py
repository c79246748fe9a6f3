"""Binary operations mod p (toy_quanta.data.modular) against plain Python loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toy_quanta.errors import ConfigError
from toy_quanta.data import modular as mod

PRIME_OPS = ("div", "mixed")


def python_op(op: str, a: int, b: int, p: int) -> int | None:
    """a op b mod p with Python integers; None where undefined. Independent of the package."""
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return a * b % p
    if op == "div":
        return None if b == 0 else a * pow(b, -1, p) % p
    if op == "sq_add":
        return (a**2 + b**2) % p
    if op == "quad":
        return (a**2 + a * b + b**2) % p
    if op == "quad_a":
        return (a**2 + a * b + b**2 + a) % p
    if op == "cube_ab":
        return (a**3 + a * b) % p
    if op == "cube_ab2":
        return (a**3 + a * b**2 + b) % p
    if op == "mixed":
        return a * pow(b, -1, p) % p if b % 2 == 1 else (a - b) % p
    raise KeyError(op)


def python_table(op: str, p: int) -> np.ndarray:
    """Rows (a, b, c) of every defined pair, a then b, by a double loop."""
    rows = [(a, b, c) for a in range(p) for b in range(p) if (c := python_op(op, a, b, p)) is not None]
    return np.array(rows, dtype=np.int64)


# --- tables ----------------------------------------------------------------------------------

def test_op_names_and_records():
    """The ten Power et al. ops, each with a formula; only div and mixed need a prime."""
    assert set(mod.OPS) == {"add", "sub", "mul", "div", "sq_add", "quad", "quad_a", "cube_ab", "cube_ab2", "mixed"}
    assert {name for name, o in mod.OPS.items() if o.needs_prime} == set(PRIME_OPS)
    assert mod.OPS["quad"].formula == "a^2 + ab + b^2"


@pytest.mark.parametrize("p", [2, 7, 11, 97])
@pytest.mark.parametrize("op", sorted(mod.OPS))
def test_table_equals_python_loops(op, p):
    """table(): every defined pair in row-major order, c in [0, p), equal to Python arithmetic."""
    a, b, c = mod.table(op, p)
    assert a.dtype == b.dtype == c.dtype == np.int32
    assert len(a) == (p * (p - 1) if op == "div" else p * p)
    np.testing.assert_array_equal(np.stack([a, b, c], axis=1), python_table(op, p))
    assert c.min() >= 0 and c.max() < p


@pytest.mark.parametrize("op", sorted(mod.OPS))
def test_large_prime_no_overflow(op):
    """p = 4093 (near P_MAX): a^3 and the Fermat powers would overflow without reducing every step."""
    p = 4093
    a, b = np.random.default_rng(0).integers(0, p, size=(2, 2000))
    a[:5], b[:5] = p - 1, p - 1  # the largest residues
    c, defined = mod.OPS[op].fn(a, b, p)
    want = [python_op(op, int(x), int(y), p) for x, y in zip(a, b)]
    np.testing.assert_array_equal(defined, [w is not None for w in want])
    np.testing.assert_array_equal(c[defined], [w for w in want if w is not None])


def test_op_functions_flag_undefined_pairs():
    """fn() returns (c, defined): div is undefined exactly at b = 0, mixed nowhere."""
    a_N, b_N = np.divmod(np.arange(49), 7)
    _, defined = mod.OPS["div"].fn(a_N, b_N, 7)
    np.testing.assert_array_equal(defined, b_N != 0)
    _, defined = mod.OPS["mixed"].fn(a_N, b_N, 7)
    assert defined.all()


def test_is_prime():
    primes = [n for n in range(200) if mod.is_prime(n)]
    assert primes == [n for n in range(2, 200) if all(n % d for d in range(2, n))]


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [4, 8, 9, 100])
def test_composite_p_ok_without_inverse(p):
    for op in mod.OPS:
        if op not in PRIME_OPS:
            mod.check(op, p, 0.5)
            assert len(mod.table(op, p)[0]) == p * p


@pytest.mark.parametrize("op", PRIME_OPS)
@pytest.mark.parametrize("p", [8, 9])
def test_composite_p_rejected_for_inverse_ops(op, p):
    with pytest.raises(ConfigError, match=rf"task\.p={p}.*prime.*{op}") as e:
        mod.check(op, p, 0.5)
    assert e.value.key == "task.p" and e.value.value == p
    with pytest.raises(ConfigError):
        mod.table(op, p)


@pytest.mark.parametrize("p", [1, 0, -3, 2.5, 7.0, True, "7", None, mod.P_MAX + 1])
def test_bad_p_rejected(p):
    with pytest.raises(ConfigError, match=r"task\.p=") as e:
        mod.check("add", p, 0.5)
    assert e.value.key == "task.p" and e.value.value is p


@pytest.mark.parametrize("f", [0, 1, 0.0, 1.0, -0.1, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_fraction_rejected(f):
    with pytest.raises(ConfigError, match=r"task\.train_fraction=") as e:
        mod.check("add", 7, f)
    assert e.value.key == "task.train_fraction" and e.value.value is f


@pytest.mark.parametrize("f", [1e-9, 0.3, 0.5, 0.999])
def test_good_fraction_accepted(f):
    mod.check("div", 97, f)


def test_unknown_op_lists_allowed():
    with pytest.raises(ConfigError, match=r"task\.op='pow'") as e:
        mod.check("pow", 7, 0.5)
    assert e.value.key == "task.op"
    for name in mod.OPS:
        assert name in e.value.allowed


# --- split -----------------------------------------------------------------------------------

def test_split_rank_is_a_seeded_permutation():
    r = mod.split_rank(9409, 0)
    assert r.dtype == np.int32 and r.shape == (9409,)
    np.testing.assert_array_equal(np.sort(r), np.arange(9409))
    np.testing.assert_array_equal(r, mod.split_rank(9409, 0))
    assert (r != mod.split_rank(9409, 1)).mean() > 0.99


@pytest.mark.parametrize("n_pairs,f", [(9312, 0.3), (9409, 0.5), (49, 0.4), (42, 0.75), (9409, 0.123)])
def test_train_mask_sizes_disjoint_covering(n_pairs, f):
    """train = rank < round(f N): round(f N) pairs; validation the rest."""
    rank = mod.split_rank(n_pairs, 3)
    train = np.asarray(mod.train_mask(jnp.asarray(rank), f))
    assert train.dtype == bool and train.shape == (n_pairs,)
    assert train.sum() == round(f * n_pairs) == mod.n_train(n_pairs, f)
    assert (~train).sum() == n_pairs - round(f * n_pairs)
    np.testing.assert_array_equal(train, rank < round(f * n_pairs))


def test_train_mask_clipped_to_one_pair_each_side():
    rank = jnp.asarray(mod.split_rank(49, 0))
    assert int(mod.train_mask(rank, 1e-9).sum()) == 1 == mod.n_train(49, 1e-9)
    assert int(mod.train_mask(rank, 0.999).sum()) == 48 == mod.n_train(49, 0.999)


def test_train_sets_nested_across_fractions():
    rank = jnp.asarray(mod.split_rank(9409, 7))
    fractions = [0.05, 0.2, 0.3, 0.5, 0.9]
    masks = [np.asarray(mod.train_mask(rank, f)) for f in fractions]
    for small, large in zip(masks, masks[1:]):
        assert (small <= large).all() and small.sum() < large.sum()


def test_train_mask_jit_vmap_agrees_with_host():
    """vmap over an ensemble's fractions under jit: each member's count equals n_train on the host."""
    n_pairs = 97 * 96
    rank = jnp.asarray(mod.split_rank(n_pairs, 0))
    fractions = np.array([1e-9, 0.1, 0.25, 0.3, 0.4, 0.5, 0.61, 0.999], np.float32)
    masks = np.asarray(jax.jit(jax.vmap(mod.train_mask, in_axes=(None, 0)))(rank, jnp.asarray(fractions)))
    assert masks.shape == (len(fractions), n_pairs)
    for f, m in zip(fractions, masks):
        assert m.sum() == mod.n_train(n_pairs, float(f))
        np.testing.assert_array_equal(m, np.asarray(mod.train_mask(rank, float(f))))
    # every float32 fraction on a fine grid: device and host counts agree (including rounding ties)
    grid = jnp.linspace(0.001, 0.999, 2001, dtype=jnp.float32)
    counts = np.asarray(jax.jit(jax.vmap(lambda f: mod.train_mask(rank, f).sum()))(grid))
    np.testing.assert_array_equal(counts, [mod.n_train(n_pairs, f) for f in np.asarray(grid)])


# --- sequences -------------------------------------------------------------------------------

def test_sequences_layout():
    p = 11
    a, b, c = mod.table("div", p)
    tokens = mod.sequences(a, b, p)
    assert tokens.shape == (len(a), mod.SEQ_LEN) == (p * (p - 1), 4) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens[:, 0], a)
    np.testing.assert_array_equal(tokens[:, 2], b)
    assert (tokens[:, 1] == p).all() and (tokens[:, 3] == p + 1).all()
    assert mod.vocab_size(p) == p + mod.VOCAB_EXTRA == 13 and tokens.max() < mod.vocab_size(p)
