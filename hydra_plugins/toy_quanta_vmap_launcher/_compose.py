"""A sweep's job configs, composed once per shape instead of once per job.

Hydra composes every job of a multirun from scratch: the defaults tree, the config files, the
merges of the structured schema (0.1 to 0.3 s a job on 2 cores), and its basic sweeper does it
twice (once to check the batch, then the launcher again). A thousand-point sweep spent minutes
there. Jobs that differ only in the values of plain config keys (`seed=7 optim.lr=3e-3`: no
config group, no `+`, `~` or `++`, no hydra key) come from one composed template: a copy, with
those keys set as Hydra sets them (OmegaConf.update after composing, which is what Hydra does
with a value override), and the template's `hydra.overrides.task` and
`hydra.job.override_dirname` made for the job's overrides. Anything else is composed by Hydra.
tests/cli/test_sweep_compose.py checks that the two give the same config.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra._internal.config_loader_impl import get_overrides_dirname  # what Hydra names a job by
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf

_COMPOSER = "_toy_quanta_composer"  # the SweepComposer installed on a config loader


class SweepComposer:
    """Wraps a config loader's load_sweep_config: a template per shape of overrides, and the
    configs the sweeper composed kept until the launcher takes them (take)."""

    def __init__(self, compose: Any):
        self.compose = compose  # the loader's own load_sweep_config
        self.parser = OverridesParser.create()
        self.templates: dict[tuple, tuple[DictConfig, list[Override]]] = {}
        self.kept: dict[tuple[str, ...], DictConfig] = {}

    def __call__(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        composed = self.load(master_config, sweep_overrides)
        self.kept[tuple(sweep_overrides)] = composed  # the sweeper's check: the launcher's config
        return composed

    def take(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        """The job's config: the one the sweeper composed, or a new one."""
        kept = self.kept.pop(tuple(sweep_overrides), None)
        return kept if kept is not None else self.load(master_config, list(sweep_overrides))

    def load(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        try:
            parsed = self.parser.parse_overrides(list(sweep_overrides))
        except Exception:  # noqa: BLE001  Hydra's own composition says what is wrong with it
            return self.compose(master_config, sweep_overrides)
        shape = _shape(parsed)
        made = self.templates.get(shape)
        if made is not None:
            cfg = _from_template(*made, parsed, master_config)
            if cfg is not None:
                return cfg
        cfg = self.compose(master_config, sweep_overrides)
        if shape is not None and shape not in self.templates:
            self.templates[shape] = (copy.deepcopy(cfg), parsed)
        return cfg


def _plain(override: Override) -> bool:
    """A value override of a config key: what a copy of a composed config can take."""
    return (override.type == OverrideType.CHANGE and override.package is None and not override.is_hydra_override()
            and not override.is_sweep_override())


def _shape(parsed: list[Override]) -> Optional[tuple]:
    """What must be equal for two jobs to share a template: every override's key and kind, and the
    value of every override that is not plain (a group choice, a `+key`). None: no template."""
    keys = [o.key_or_group for o in parsed]
    if len(set(keys)) != len(keys):
        return None  # a key given twice: Hydra's order of application decides
    return tuple((o.key_or_group, o.type.name, o.is_hydra_override(), None if _plain(o) else o.input_line)
                 for o in parsed)


def _from_template(template: DictConfig, template_overrides: list[Override], parsed: list[Override],
                   master_config: DictConfig) -> Optional[DictConfig]:
    """The template with the plain overrides that differ set, or None where it cannot serve."""
    choices = set(OmegaConf.select(template, "hydra.runtime.choices", default={}) or {})
    changed = [(o, t) for o, t in zip(parsed, template_overrides) if o.input_line != t.input_line]
    values = {o.key_or_group: o.value() for o, _ in changed}
    for key, value in values.items():
        node = OmegaConf.select(template, key, throw_on_missing=False)
        if key in choices or isinstance(node, DictConfig) or isinstance(value, dict):
            return None  # a config group, or a node that a dict value would merge into
    cfg = copy.deepcopy(template)
    try:
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=True)
    except Exception:  # noqa: BLE001  a wrong type or value: Hydra's composition raises it properly
        return None
    app = [o for o in parsed if not o.is_hydra_override()]
    cfg.hydra.overrides.task = [o.input_line for o in app]
    dirname = cfg.hydra.job.config.override_dirname
    cfg.hydra.job.override_dirname = get_overrides_dirname(overrides=app, kv_sep=dirname.kv_sep,
                                                           item_sep=dirname.item_sep,
                                                           exclude_keys=dirname.exclude_keys)
    OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
    return cfg


def install(hydra_context: HydraContext) -> SweepComposer:
    """The loader's SweepComposer: installed as its load_sweep_config (the sweeper's calls go
    through it) on first use."""
    loader = hydra_context.config_loader
    composer = getattr(loader, _COMPOSER, None)
    if composer is None:
        composer = SweepComposer(loader.load_sweep_config)
        setattr(loader, _COMPOSER, composer)
        loader.load_sweep_config = composer
    return composer
