"""Training configuration: typed dataclasses filled from a recipe preset, then a config file, then
command-line flags (each field is a flag ``--field-name``). The resolved configuration is written next to
every run (``config.json``).

Every field is declared once, with its type, default, one-line meaning and bounds: ``Literal[...]`` types
give the allowed values, and :func:`validate`, the CLI's ``choices=`` and its ``--help`` all read them
from here.

Presets are YAML files in ``uvireid_ext/configs/`` (installed with the package), read by the same
:func:`load_file` as a user's ``--config`` file. A file may start from another with ``_base_: <file>``
(a path relative to the file, or the name of a preset: ``_base_: ecul``); its sections then override the
base's field by field. ``baseline.yaml`` is MMM's Baseline / cluster-contrast; ``mmm.yaml`` and
``ecul.yaml`` are small overrides on it. Stage epochs (``joint_start``, ``cma_start``, ``tsmem_switch``, ``mmlm_start``)
may be written as a share of the run, ``"50%"``: resolved to ``epochs * 50 // 100`` once the number of
epochs is known (when the configuration is built), so the presets scale with ``--epochs``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from fractions import Fraction
from typing import Any, Literal

__all__ = [
    "PRESET_DIR",
    "RECIPES",
    "Config",
    "DataConfig",
    "ModelConfig",
    "ObjectiveName",
    "OptimConfig",
    "RecipeConfig",
    "RunConfig",
    "add_arguments",
    "config_from_args",
    "config_from_dict",
    "load_file",
    "make_config",
    "preset_path",
    "save_config",
    "validate",
]

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

Recipe = Literal["baseline", "mmm", "ecul"]
RECIPES: tuple[str, ...] = typing.get_args(Recipe)
ObjectiveName = Literal["cluster_nce", "instance", "joint", "sca", "cma", "triplet"]
Stage = int | str | None  # an epoch, or a share of the run ("50%") until resolved


def opt(default: Any, help: str, *, low: float | None = None, above: float | None = None,
        factory: Any = None) -> Any:
    """A field with its ``--help`` line and bounds: ``low`` (value >= low) or ``above`` (value > above)."""
    meta = {"help": help, "low": low, "above": above}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: Literal["sysu", "regdb"] = opt("sysu", "data set (layout of data_root)")
    data_root: str = opt("", "root folder of the data set")
    trial: int = opt(1, "RegDB split to train and test on", low=1)
    height: int = opt(288, "image height in pixels (training and test)", low=1)
    width: int = opt(144, "image width in pixels (training and test)", low=1)
    eval_mode: Literal["all", "indoor"] = opt("all", "SYSU-MM01 search mode")
    eval_trials: int = opt(10, "SYSU-MM01 gallery trials averaged", low=1)
    eval_every: int = opt(1, "evaluate every n epochs (0: only after the last)", low=0)
    test_flip: bool = opt(True, "average test features with the flipped image's (ADCA/PGM/MPJL; MMM: false)")


@dataclass
class ModelConfig:
    arch: Literal["resnet50", "small"] = opt("resnet50", "backbone: ResNet-50, or a small net for tests and demos")
    weights: str | None = opt(None, "local torchvision-format ImageNet state dict for the backbone")
    non_local: bool = opt(False, "non-local blocks in layers 2 and 3 (AGW)")


@dataclass
class OptimConfig:
    epochs: int = opt(100, "training epochs", low=0)
    iters: int = opt(200, "iterations per epoch", low=1)
    ids_per_batch: int = opt(8, "P: pseudo-identities per batch", low=1)
    instances: int = opt(16, "K: images per identity and modality in a batch", low=1)
    optimizer: Literal["adam", "sgd"] = opt("adam", "optimiser (sgd: momentum 0.9, Nesterov)")
    lr: float = opt(3.5e-4, "learning rate", above=0)
    weight_decay: float = opt(5e-4, "weight decay", low=0)
    step_size: int = opt(20, "epochs between learning-rate decays", low=1)
    gamma: float = opt(0.1, "learning-rate decay factor", above=0)
    extract_batch: int = opt(256, "images per batch when extracting features", low=1)


@dataclass
class RecipeConfig:
    recipe: Recipe = opt("baseline", "the preset the run starts from (uvireid_ext/configs/<recipe>.yaml)")
    objectives: list[ObjectiveName] = opt(None, "training objectives (run in the fixed order cluster_nce, "
                                          "instance, joint, sca, cma, triplet)", factory=lambda: ["cluster_nce"])
    clustering: Literal["baseline", "ecul"] = opt("baseline", "pseudo-label clustering: plain/modality "
                                                  "k-reciprocal (baseline) or EMCC (ecul)")
    temp: float = opt(0.05, "temperature of the NCE losses", above=0)
    eps: float | None = opt(None, "DBSCAN eps (none: the clustering's, 0.6 SYSU / 0.3 RegDB)", above=0)
    min_samples: int | None = opt(None, "DBSCAN min_samples (none: the clustering's, 4)", low=1)
    memory_momentum: float = opt(0.1, "momentum of the cluster-memory updates", low=0)
    tsmem_switch: Stage = opt(None, "TSMem: epoch (or share of the run, 50%) of the switch from replacement to "
                              "momentum updates; none: off", low=0)
    instance_weight: float = opt(1.0, "weight of the instance objective")
    cma_start: Stage = opt(0, "cma objective: first epoch (or share of the run) of cross-modality memory "
                           "aggregation", low=0)
    joint_start: Stage = opt(0, "joint objective: first epoch (or share of the run) of joint clustering and "
                             "its loss", low=0)
    joint_weight: float = opt(1.0, "weight of the joint objective")
    select_joint: bool = opt(True, "keep only the joint clusters holding both modalities")
    mmlm: bool = opt(False, "MMLM: visible clusters take their matched infrared cluster's label (MMM)")
    mmlm_method: Literal["greedy", "hungarian"] = opt("greedy", "MMLM matching: greedy (authors' code) or "
                                                      "hungarian (paper)")
    mmlm_start: Stage = opt(None, "MMLM: first epoch (or share of the run) of matched labels; before it, "
                            "per-modality labels; none: from epoch 0", low=0)
    recluster: bool = opt(True, "cluster every epoch (false: once, labels kept)")
    oracle_labels: bool = opt(False, "diagnostic upper bound: ground-truth identities instead of clustering")
    sca_distance: Literal["l1", "l2sq"] = opt("l1", "SCA intra distance: l1 (authors' code) or l2sq (paper)")
    sca_intra_weight: float = opt(0.5, "weight of SCA's intra alignment")
    sca_inter_weight: float = opt(0.05, "weight of SCA's inter alignment (MMD²)")
    triplet_weight: float = opt(0.0, "weight of the triplet objective")


@dataclass
class RunConfig:
    output: str = opt("runs/train", "run folder (config.json, log.jsonl, checkpoint.pt)")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    deterministic: bool = opt(False, "deterministic algorithms (slower)")
    threads: int | None = opt(None, "torch CPU threads (none or 0: torch's default)", low=0)
    amp: bool = opt(True, "bf16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = opt(True, "channels_last memory format on CUDA")
    resume: bool = opt(False, "continue from <output>/checkpoint.pt")
    progress: bool = opt(True, "progress bar over the iterations (on a terminal)")
    tensorboard: bool = opt(False, "write TensorBoard scalars to <output>/tb")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    run: RunConfig = field(default_factory=RunConfig)


_SECTIONS: dict[str, type] = typing.get_type_hints(Config)
# How a run is executed, not what it computes: these may change between a run and its resume (another
# thread count or device changes float reductions: train warns that the continuation is not bit-exact).
# optim.epochs may change too: checkpoint.extend_schedule keeps the stage epochs of the first run
RESUMABLE_CHANGES = {("run", "resume"), ("run", "progress"), ("run", "tensorboard"), ("run", "threads"),
                     ("run", "device"), ("data", "data_root"), ("run", "output"), ("optim", "epochs")}
STAGE_FIELDS = ("tsmem_switch", "cma_start", "joint_start", "mmlm_start")  # recipe fields of type Stage


def _fields(section: str) -> list[tuple[Any, Any]]:
    """(field, resolved type) of every field of a section."""
    cls = _SECTIONS[section]
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in fields(cls)]


def _kind(t: Any) -> tuple[str, Any, bool]:
    """(kind, base type, optional) of a field type; kind: literal, list, stage, bool, or scalar."""
    args = typing.get_args(t)
    if typing.get_origin(t) is Literal:
        return "literal", t, False
    if typing.get_origin(t) is list:
        return "list", args[0], False
    if set(args) == {int, str, type(None)}:
        return "stage", int, True
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), t) if args else t
    return ("bool" if base is bool else "scalar"), base, optional


# --------------------------------------------------------------------------------------------------
# Files and presets


def preset_path(name: str) -> str:
    """The file of the preset ``name`` (``uvireid_ext/configs/<name>.yaml``)."""
    if name not in RECIPES:
        raise ValueError(f"config: unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return os.path.join(PRESET_DIR, f"{name}.yaml")


def _merge(base: dict, top: dict) -> dict:
    out = {k: dict(v or {}) for k, v in base.items()}
    for section, entries in top.items():
        out.setdefault(section, {}).update(entries or {})
    return out


def load_file(path: str, _seen: tuple[str, ...] = ()) -> dict:
    """{section: {field: value}} of a YAML or JSON file, its ``_base_`` chain merged under it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config: file not found: {path}")
    with open(path) as f:
        text = f.read()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as e:  # YAML and JSON syntax errors: name the file
        raise ValueError(f"config: cannot parse {path}: {e}") from e
    if not isinstance(values, dict):
        raise ValueError(f"config: {path} must hold a mapping of sections, got {type(values).__name__}")
    base = values.pop("_base_", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ValueError(f"config: _base_ in {path} must be a file or preset name, got {base!r}")
    base_path = preset_path(base) if base in RECIPES else os.path.join(os.path.dirname(path), base)
    if os.path.abspath(base_path) in _seen:
        raise ValueError(f"config: _base_ cycle through {base_path}")
    return _merge(load_file(base_path, (*_seen, os.path.abspath(path))), values)


def _apply(cfg: Config, values: dict, where: str) -> None:
    for section, entries in values.items():
        if section not in _SECTIONS:
            raise ValueError(f"config: unknown section {section!r} in {where}; known: {sorted(_SECTIONS)}")
        obj = getattr(cfg, section)
        names = {f.name for f in fields(obj)}
        for k, v in (entries or {}).items():
            if k not in names:
                raise ValueError(f"config: unknown field {section}.{k} in {where}; known: {sorted(names)}")
            setattr(obj, k, list(v) if isinstance(v, (list, tuple)) else v)


_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _resolve_stages(cfg: Config) -> None:
    """Stage fields written as a share of the run ("50%") → the epoch ``epochs * share // 100``."""
    for f, t in _fields("recipe"):
        value = getattr(cfg.recipe, f.name)
        if _kind(t)[0] == "stage" and isinstance(value, str):
            m = _SHARE.match(value)
            if m is None:
                raise ValueError(f"config: recipe.{f.name} must be an epoch, a share of the run like '50%', or "
                                 f"none; got {value!r}")
            setattr(cfg.recipe, f.name, int(Fraction(m.group(1)) * cfg.optim.epochs // 100))


def _build(recipe: str, epochs: int | None, layers: list[tuple[dict, str]]) -> Config:
    cfg = Config()
    path = preset_path(recipe)
    _apply(cfg, load_file(path), path)
    if epochs is not None:
        cfg.optim.epochs = epochs
    for values, where in layers:
        _apply(cfg, values, where)
    _resolve_stages(cfg)
    return cfg


def make_config(recipe: str = "ecul", epochs: int | None = None, overrides: dict | None = None) -> Config:
    """Defaults → the recipe's preset → ``epochs`` → ``overrides`` ({section: {field: value}}); stage
    shares resolved against the resulting number of epochs."""
    return _build(recipe, epochs, [(overrides or {}, "overrides")])


def config_from_dict(values: dict) -> Config:
    """A configuration from {section: {field: value}} over the defaults (e.g. a saved ``config.json``)."""
    cfg = Config()
    _apply(cfg, values, "dict")
    _resolve_stages(cfg)
    return cfg


def save_config(cfg: Config, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(cfg), f, indent=2)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# Validation


def validate(cfg: Config) -> None:
    """Every field against its type and bounds, then the rules across fields; raises naming the field."""
    for section in _SECTIONS:
        obj = getattr(cfg, section)
        for f, t in _fields(section):
            _check_field(section, f, t, getattr(obj, f.name))
    r = cfg.recipe
    if len(set(r.objectives)) != len(r.objectives):
        raise ValueError(f"config: recipe.objectives lists an objective twice: {r.objectives}")
    for needs in ("sca", "cma"):
        if needs in r.objectives and "cluster_nce" not in r.objectives:
            raise ValueError(f"config: the {needs} objective works on the cluster memories; add cluster_nce to "
                             f"recipe.objectives (got {r.objectives})")
    if not r.recluster and "joint" in r.objectives and r.joint_start > 0:
        raise ValueError(f"config: recluster=False with joint_start={r.joint_start} > 0 would never compute the "
                         "joint labels (labels are fixed at the first epoch); use joint_start=0 or recluster")


def _check_field(section: str, f: Any, t: Any, value: Any) -> None:
    name = f"{section}.{f.name}"
    kind, base, optional = _kind(t)
    if kind == "literal":
        if value not in typing.get_args(base):
            raise ValueError(f"config: unknown {f.name} {value!r} ({name}); expected one of "
                             f"{', '.join(typing.get_args(base))}")
        return
    if kind == "list":
        bad = [v for v in value if v not in typing.get_args(base)] if isinstance(value, list) else [value]
        if bad:
            raise ValueError(f"config: unknown {f.name} {bad} ({name}); expected a list of "
                             f"{', '.join(typing.get_args(base))}")
        return
    if value is None and optional:
        return
    if base is bool or kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"config: {name} must be true or false, got {value!r}")
        return
    if base is str:
        if not isinstance(value, str):
            raise ValueError(f"config: {name} must be a string, got {value!r}")
        return
    ok = isinstance(value, int) if base is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        what = "an integer" if base is int else "a number"
        raise ValueError(f"config: {name} must be {what}, got {value!r}")
    low, above = f.metadata.get("low"), f.metadata.get("above")
    unset = " (or unset)" if optional else ""
    if low is not None and value < low:
        raise ValueError(f"config: {name} must be >= {low}{unset}, got {value}")
    if above is not None and not value > above:
        raise ValueError(f"config: {name} must be > {above}{unset}, got {value}")


# --------------------------------------------------------------------------------------------------
# Command line


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_optional(kind: type):  # noqa: ANN202
    def parse(s: str):  # noqa: ANN202
        return None if s.lower() in ("none", "null", "") else kind(s)

    return parse


def _parse_stage(s: str) -> int | str | None:
    if s.lower() in ("none", "null", ""):
        return None
    if _SHARE.match(s):
        return s
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an epoch, a share like 50%, or none; got {s!r}") from None


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field (default None = not given); booleans take true/false, bare flag = true."""
    parser.add_argument("--config", default=None,
                        help="a YAML or JSON file of {section: {field: value}} (may start from _base_: <preset>)")
    for section in _SECTIONS:
        group = parser.add_argument_group(section)
        for f, t in _fields(section):
            default = f.default if f.default is not MISSING else f.default_factory()
            text = f"{f.metadata['help']} (default: {default})".replace("%", "%%")  # argparse formats help
            kind, base, optional = _kind(t)
            if kind == "literal":
                group.add_argument(_flag(f.name), choices=typing.get_args(base), default=None, help=text)
            elif kind == "list":
                group.add_argument(_flag(f.name), nargs="+", choices=typing.get_args(base), default=None,
                                   metavar=f.name.upper()[:-1] if f.name.endswith("s") else f.name.upper(),
                                   help=f"{text}; from: {', '.join(typing.get_args(base))}")
            elif kind == "stage":
                group.add_argument(_flag(f.name), type=_parse_stage, default=None, metavar="EPOCH|N%|none",
                                   help=text)
            elif kind == "bool":
                group.add_argument(_flag(f.name), type=_parse_bool, nargs="?", const=True, default=None,
                                   metavar="BOOL", help=text)
            else:
                group.add_argument(_flag(f.name), type=_parse_optional(base) if optional else base, default=None,
                                   help=text)


def config_from_args(args: argparse.Namespace) -> Config:
    """Preset of the chosen recipe → config file → flags given on the command line."""
    given = vars(args)
    file_values = load_file(args.config) if getattr(args, "config", None) else {}
    recipe = given.get("recipe") or file_values.get("recipe", {}).get("recipe") or "ecul"
    epochs = given.get("epochs") or file_values.get("optim", {}).get("epochs")
    flags: dict[str, dict] = {}
    for section in _SECTIONS:
        for f, _ in _fields(section):
            if given.get(f.name) is not None:
                flags.setdefault(section, {})[f.name] = given[f.name]
    return _build(recipe, epochs, [(file_values, args.config or ""), (flags, "flags")])
