"""Sequences whose later part is predictable only by induction (Olsson et al. 2022), on the device.

Layout: each sequence draws a period L uniformly from [block_min, block_max] and a block of L
distinct tokens, uniformly from the vocabulary; the block is repeated to fill the seq_len positions:

    position  0 1 2 3 4 5 6 7 8 9 ...        (L = 4)
    token     a b c d a b c d a b ...

The first copy is unpredictable (uniform tokens). From position L on, every token has occurred
exactly L positions earlier, and the token after that occurrence is the next one: the position is
predictable by copying, and only by copying, since L varies from sequence to sequence and the
block's tokens are random. The tokens of a block are distinct, so a token's previous occurrence
is unique and copying it is never wrong. With L much shorter than the context most positions are
predictable, so a model that has learned induction brings the loss over the whole sequence far
below ln(vocab); the unpredictable first copy keeps it above about L/seq_len x ln(vocab).

`mask_BxS[b, i]` marks position i whose next token (i + 1) is predictable by copying: L <= i and
i < seq_len - 1 (the last position has no next token).

The standard probe for prefix matching is `repeated_probe`: a block of seq_len // 2 distinct random
tokens, repeated (twice when the vocabulary holds that many tokens).

`segment` is the other layout, Olsson et al.'s: uniform random tokens in which one segment of
L (uniform in [block_min, block_max]) tokens is copied once further on, at a random offset:

    position  0 1 2 3 4 5 6 7 8 9 10 11 ...   (L = 4, source at 2, copy at 7)
    token     q x a b c d y z a b c  d  w ...

Positions do not line up with the repeat (the copy starts anywhere after its source), so
absolute positions predict nothing: only looking back from a token to what followed its earlier
occurrence does. Its mask marks the copy's positions but its last (i in [d, d + L - 2]): their
next token is the source's next one. Tokens may repeat by chance elsewhere (copying them is then
a guess); the loss on the mask is what an induction head brings down.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def periodic(key: jax.Array, batch: int, seq_len: int, vocab: int, block_min: int,
             block_max: int) -> tuple[jax.Array, jax.Array]:
    """(tokens_BxS int32, mask_BxS bool): `batch` sequences of the layout above."""
    k_len, k_tok = jax.random.split(key)
    period_B = jax.random.randint(k_len, (batch,), block_min, block_max + 1)
    # block_max distinct tokens per sequence, in random order: the top block_max of vocab iid
    # uniforms are a uniformly random ordered subset (top_k is O(vocab) per row, a sort is not)
    _, block = jax.lax.top_k(jax.random.uniform(k_tok, (batch, vocab)), block_max)  # (B, block_max)
    pos_S = jnp.arange(seq_len)
    tokens_BxS = jnp.take_along_axis(block, pos_S[None, :] % period_B[:, None], axis=1).astype(jnp.int32)
    mask_BxS = (pos_S[None, :] >= period_B[:, None]) & (pos_S[None, :] < seq_len - 1)
    return tokens_BxS, mask_BxS


def segment(key: jax.Array, batch: int, seq_len: int, vocab: int, block_min: int,
            block_max: int) -> tuple[jax.Array, jax.Array]:
    """(tokens_BxS int32, mask_BxS bool): `batch` sequences of random tokens with one segment copied
    at a random offset (the layout above). Needs seq_len >= 2 * block_max."""
    k_tok, k_len, k_src, k_dst = jax.random.split(key, 4)
    tokens_BxS = jax.random.randint(k_tok, (batch, seq_len), 0, vocab, dtype=jnp.int32)
    length_B = jax.random.randint(k_len, (batch,), block_min, block_max + 1)
    # source start s in [0, seq_len - 2L], copy start d in [s + L, seq_len - L]: both whole, no overlap
    u_src, u_dst = jax.random.uniform(k_src, (batch,)), jax.random.uniform(k_dst, (batch,))
    src_B = jnp.floor(u_src * (seq_len - 2 * length_B + 1)).astype(jnp.int32)
    dst_B = src_B + length_B + jnp.floor(u_dst * (seq_len - src_B - 2 * length_B + 1)).astype(jnp.int32)
    pos_S = jnp.arange(seq_len)
    offset_BxS = pos_S[None, :] - dst_B[:, None]
    in_copy_BxS = (offset_BxS >= 0) & (offset_BxS < length_B[:, None])
    source_BxS = jnp.clip(src_B[:, None] + offset_BxS, 0, seq_len - 1)
    copied_BxS = jnp.take_along_axis(tokens_BxS, source_BxS, axis=1)
    tokens_BxS = jnp.where(in_copy_BxS, copied_BxS, tokens_BxS)
    mask_BxS = (offset_BxS >= 0) & (offset_BxS < length_B[:, None] - 1)
    return tokens_BxS, mask_BxS


LAYOUTS = {"periodic": periodic, "segment": segment}


def probe_period(seq_len: int, vocab: int) -> int:
    """The probe's block length: half the context, or the whole vocabulary if that is shorter."""
    return max(1, min(seq_len // 2, vocab))


def repeated_probe(key: jax.Array, batch: int, seq_len: int, vocab: int) -> jax.Array:
    """tokens_BxS: a block of probe_period distinct random tokens repeated to fill the context
    (Olsson et al.'s repeated random tokens, for the prefix-matching score)."""
    period = probe_period(seq_len, vocab)
    return periodic(key, batch, seq_len, vocab, period, period)[0]
