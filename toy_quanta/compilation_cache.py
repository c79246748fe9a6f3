"""JAX's persistent compilation cache: compiled programs are kept on disk, keyed by the program and
the machine, so the second job of a sweep with the same shapes (or the same job run again) loads
its program instead of compiling it. A leaf module."""

from __future__ import annotations

import os

import jax

MIN_COMPILE_S = 0.1  # keep programs that took at least this long to compile (JAX's default, 1 s, misses small models)


def enable(directory: str | None) -> None:
    """Use `directory` (~ expanded) as the cache; None leaves the cache as it is."""
    if directory is None:
        return
    path = os.path.expanduser(directory)
    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
