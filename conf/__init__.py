"""Hydra configs of toy_quanta, installed as the package `toy_quanta.conf` (see pyproject.toml)."""
