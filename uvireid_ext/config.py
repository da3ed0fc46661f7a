"""Training configuration: dataclasses filled from a recipe preset, then a config file (JSON, or YAML when
PyYAML is importable), then command-line flags (each field is a flag ``--field-name``). The resolved
configuration is written next to every run (``config.json``).

Recipes are presets of :class:`RecipeConfig` on one training loop (``uvireid_ext.train``):

* ``baseline``: MMM's Baseline / cluster-contrast CMC: per-modality DBSCAN labels, ClusterNCE on the
  visible and infrared cluster memories (momentum 0.1), plus joint (visible + infrared) clustering and a
  joint ClusterNCE from half-way on (stage 2).
* ``mmm``: CMC labels → MMLM (visible clusters take their matched infrared cluster's label) → training
  with ClusterNCE on the shared labels, SCA (GMM confidences, intra alignment to confidence-weighted
  prototypes, inter MMD²) and batch-hard triplet. Paper-vs-code switches (docs/methods.md, MMM):
  ``mmlm_method`` greedy (code) | hungarian (paper), ``sca_distance`` l1 (code) | l2sq (paper),
  ``recluster`` (re-cluster every epoch; the code clusters once and keeps the labels).
* ``ecul``: EMCC clustering, cluster + instance memories, TSMem (replacement, then momentum),
  cross-modality memory aggregation from 1/4 of the run, joint clustering with instance selection and
  weight 0.7 from 1/2 (MPJL's 25/25/50 schedule, inferred, docs/methods.md, ECUL).
"""

from __future__ import annotations

import argparse
import json
import os
import typing
from dataclasses import asdict, dataclass, field, fields

__all__ = [
    "RECIPES",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RecipeConfig",
    "RunConfig",
    "add_arguments",
    "config_from_dict",
    "config_from_args",
    "load_file",
    "make_config",
    "recipe_preset",
    "save_config",
]


@dataclass
class DataConfig:
    dataset: str = "sysu"  # sysu | regdb
    data_root: str = ""
    trial: int = 1  # RegDB split
    height: int = 288
    width: int = 144
    eval_mode: str = "all"  # SYSU: all | indoor
    eval_trials: int = 10
    eval_every: int = 1  # evaluate every n epochs (0: only after the last)
    test_flip: bool = True  # test features averaged with the flipped image (ADCA/PGM/MPJL); MMM: False


@dataclass
class ModelConfig:
    arch: str = "resnet50"  # resnet50 | small
    weights: str | None = None  # local torchvision-format ImageNet state dict
    non_local: bool = False


@dataclass
class OptimConfig:
    epochs: int = 100
    iters: int = 200
    ids_per_batch: int = 8  # P
    instances: int = 16  # K images per identity per modality
    optimizer: str = "adam"  # adam | sgd
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20
    gamma: float = 0.1
    extract_batch: int = 256


@dataclass
class RecipeConfig:
    recipe: str = "ecul"
    clustering: str = "ecul"  # the uvireid_ext.cluster configuration: baseline (plain/modality) | ecul (EMCC)
    temp: float = 0.05
    eps: float | None = None  # overrides the clustering configuration's DBSCAN eps
    min_samples: int | None = None  # overrides its DBSCAN min_samples
    memory_momentum: float = 0.1
    tsmem_switch: int | None = None  # epoch of TSMem's switch from replacement to momentum; None: off
    instance_memory: bool = False
    instance_weight: float = 1.0
    cma_start: int | None = None  # epoch from which cross-modality memory aggregation runs; None: off
    joint_start: int | None = None  # epoch from which joint clustering + joint loss run; None: off
    joint_weight: float = 1.0
    select_joint: bool = True
    mmlm: bool = False
    mmlm_method: str = "greedy"  # greedy (code) | hungarian (paper)
    mmlm_start: int | None = None  # epoch from which MMLM runs (before it: per-modality labels); None: from 0
    recluster: bool = True
    sca: bool = False
    oracle_labels: bool = False  # diagnostic upper bound: ground-truth identities instead of clustering
    sca_distance: str = "l1"  # l1 (code) | l2sq (paper)
    sca_intra_weight: float = 0.5
    sca_inter_weight: float = 0.05
    triplet_weight: float = 0.0


@dataclass
class RunConfig:
    output: str = "runs/train"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False
    threads: int | None = None  # torch CPU threads (None: torch's default)
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    resume: bool = False
    progress: bool = True
    tensorboard: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    run: RunConfig = field(default_factory=RunConfig)


RECIPES = ("baseline", "mmm", "ecul")


def recipe_preset(name: str, epochs: int) -> RecipeConfig:
    """The preset of ``name`` for a run of ``epochs`` epochs (stage boundaries scale with it)."""
    if name == "baseline":
        return RecipeConfig(recipe=name, clustering="baseline", joint_start=epochs // 2, joint_weight=1.0)
    if name == "mmm":
        return RecipeConfig(
            recipe=name, clustering="baseline", mmlm=True, mmlm_start=epochs // 2, sca=True, triplet_weight=1.0,
            memory_momentum=0.1,
        )
    if name == "ecul":
        return RecipeConfig(
            recipe=name,
            clustering="ecul",
            tsmem_switch=epochs // 2,
            memory_momentum=0.1,
            instance_memory=True,
            cma_start=epochs // 4,
            joint_start=epochs // 2,
            joint_weight=0.7,
        )
    raise ValueError(f"config: unknown recipe {name!r}; known: {', '.join(RECIPES)}")


_SECTIONS = {f.name: f.type for f in fields(Config)}


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in _SECTIONS}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_optional(kind: type):  # noqa: ANN202
    def parse(s: str):  # noqa: ANN202
        return None if s.lower() in ("none", "null", "") else kind(s)

    return parse


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field (default None = not given); booleans take true/false, bare flag = true."""
    parser.add_argument("--config", default=None, help="a JSON or YAML file of {section: {field: value}}")
    for section, cls in _section_types().items():
        group = parser.add_argument_group(section)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            t = hints[f.name]
            args = typing.get_args(t)
            optional = type(None) in args
            base = next((a for a in args if a is not type(None)), t) if args else t
            help_text = f"{section}.{f.name} (default: {f.default})"
            if base is bool:
                group.add_argument(_flag(f.name), type=_parse_bool, nargs="?", const=True, default=None,
                                   help=help_text)
            else:
                kind = _parse_optional(base) if optional else base
                group.add_argument(_flag(f.name), type=kind, default=None, help=help_text)


def _apply(cfg: Config, values: dict, where: str) -> None:
    for section, entries in values.items():
        if section not in _SECTIONS:
            raise ValueError(f"config: unknown section {section!r} in {where}; known: {sorted(_SECTIONS)}")
        obj = getattr(cfg, section)
        names = {f.name for f in fields(obj)}
        for k, v in (entries or {}).items():
            if k not in names:
                raise ValueError(f"config: unknown field {section}.{k} in {where}; known: {sorted(names)}")
            setattr(obj, k, v)


def load_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config: file not found: {path}")
    with open(path) as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as e:
            raise ValueError(f"config: {path} is YAML but PyYAML is not installed; use a .json file") from e
        return yaml.safe_load(text) or {}
    return json.loads(text)


def make_config(recipe: str = "ecul", epochs: int | None = None, overrides: dict | None = None) -> Config:
    """Defaults → recipe preset (stages scaled to ``epochs``) → ``overrides`` ({section: {field: v}})."""
    cfg = Config()
    ep = epochs if epochs is not None else (overrides or {}).get("optim", {}).get("epochs", cfg.optim.epochs)
    cfg.optim.epochs = ep
    cfg.recipe = recipe_preset(recipe, ep)
    if overrides:
        _apply(cfg, overrides, "overrides")
    return cfg


def config_from_args(args: argparse.Namespace) -> Config:
    """Preset of the chosen recipe → config file → flags given on the command line."""
    given = vars(args)
    file_values = load_file(args.config) if getattr(args, "config", None) else {}
    recipe = given.get("recipe") or file_values.get("recipe", {}).get("recipe") or "ecul"
    epochs = given.get("epochs") or file_values.get("optim", {}).get("epochs")
    cfg = make_config(recipe, epochs)
    _apply(cfg, file_values, args.config or "")
    flags: dict[str, dict] = {}
    for section, cls in _section_types().items():
        for f in fields(cls):
            if given.get(f.name) is not None:
                flags.setdefault(section, {})[f.name] = given[f.name]
    _apply(cfg, flags, "flags")
    return cfg


def save_config(cfg: Config, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(cfg), f, indent=2)
    os.replace(tmp, path)


def config_from_dict(values: dict) -> Config:
    cfg = Config()
    _apply(cfg, values, "dict")
    return cfg

