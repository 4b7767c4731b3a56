"""Why a command line started by a launcher would, run alone, start the ranks it does: the tp_size its recipe (or
the command line) sets, and whether the model splits as many ways as the launcher started ranks. mambapipe.cli
ends its one line refusing the launcher with it, so that the command it gives runs what the user meant."""

from __future__ import annotations

import warnings
from typing import Optional

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mambapipe.cli_keys import ParsedCommandLine, parse_command_line
from mambapipe.cli_values import config_loader, hydra_internals
from mambapipe.config import register_configs
from mambapipe.models import ModelSpec


def ranks_reason(argv: list[str], ranks: int) -> str:
    """Why `argv`, run without the launcher, starts the ranks it does, for a launcher that started `ranks` of them
    on a node: `recipe=codestral_tp2 runs tp_size=2; for 4 ranks add tp_size=4`, or `...; mamba2-130m does not
    split 2 ways (2 does not divide n_groups=1)` where the model's shapes forbid that split. Without a composed
    config (a sweep, a mistake the run will name, another primary config) all it can say is how to ask for `ranks`."""
    args = parse_command_line(argv)
    config = _composed(args) if args is not None and not args.multirun else None
    given = any(word.lstrip("+").startswith("tp_size=") for word in argv)  # tp_size=4, +tp_size=4, ++tp_size=4
    how = "write" if given else "add"
    tp_size = _tp_size(config) if config is not None else None
    if tp_size is None:
        return f"for {ranks} ranks {how} tp_size={ranks}"
    choice = OmegaConf.select(config, "hydra.runtime.choices.recipe")
    label = f"tp_size={tp_size} as given" if given else f"recipe={choice} runs tp_size={tp_size}"
    if tp_size == ranks:
        return label
    try:
        spec = ModelSpec(**OmegaConf.to_container(config.model.arch, resolve=True))
    except (TypeError, ValueError):  # a model.arch the plan refuses, and names
        return f"{label}; for {ranks} ranks {how} tp_size={ranks}"
    misfits = spec.tp_misfits(ranks)
    if misfits:
        why = f"{ranks} does not divide {', '.join(misfits)}"
        return f"{label}; {config.model.name} does not split {ranks} ways ({why})"
    return f"{label}; for {ranks} ranks {how} tp_size={ranks}"


def _tp_size(config: DictConfig) -> Optional[int]:
    """The config's tp_size; None where it does not resolve (tp_size='${oc.env:NGPUS}' with NGPUS unset): as for a
    config that does not compose, the refusal then says only how to ask for the ranks."""
    try:
        return int(config.tp_size)
    except (OmegaConfBaseException, ValueError):
        return None


def _composed(args: ParsedCommandLine) -> Optional[DictConfig]:
    """The config `args` runs, composed as Hydra will compose it (0.2 s, measured in the commit that added it);
    None where it does not compose."""
    register_configs()  # the schema, as mambapipe.app registers it on import
    try:
        with hydra_internals(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run composes again and shows them
            return config_loader(args.config_dir, []).load_configuration("config", args.overrides, RunMode.RUN)
    except Exception:  # Hydra's verdict, whatever its type, or HydraInternalsChanged: the run without the launcher
        return None  # says it
