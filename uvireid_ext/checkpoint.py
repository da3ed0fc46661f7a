"""Checkpoint I/O of a training run: atomic writes, the run state's pieces (labels, memories, RNG
streams), the resume check, and the model of a finished run."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import torch

from .cluster import Labels
from .config import RESUMABLE_CHANGES, Config, config_from_dict
from .memory import memory_from_state
from .model import TwoStreamNet, build_model

__all__ = [
    "atomic_save",
    "check_resumed_config",
    "labels_from_state",
    "labels_state",
    "load_model",
    "memories_from_state",
    "memories_state",
    "read_checkpoint",
    "restore_rng",
    "rng_state",
]


def atomic_save(obj: object, path: str) -> None:
    """Write to a temporary file, flush it to disk, then rename over ``path``: a crash leaves either
    the old checkpoint or the new one, never a torn file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path: str, what: str = "train: --resume but") -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} no checkpoint at {path}")
    try:
        # on the CPU: RNG states must stay CPU byte tensors; load_state_dict moves the rest
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"train: cannot read checkpoint {path}: {e}") from e


def check_resumed_config(cfg: Config, saved: dict, path: str) -> None:
    """A resumed run continues exactly only with the configuration it was started with."""
    now = dataclasses.asdict(cfg)
    changed = [f"{sec}.{key}: {saved[sec][key]!r} -> {value!r}"
               for sec, fields_ in now.items() for key, value in fields_.items()
               if (sec, key) not in RESUMABLE_CHANGES and sec in saved and key in saved[sec]
               and saved[sec][key] != value]
    if changed:
        raise ValueError(f"train: --resume with a configuration that differs from the checkpoint's ({path}): "
                         + "; ".join(changed))


def labels_state(labels: Labels | None) -> dict | None:
    if labels is None:
        return None
    return {"intra": labels.intra.cpu(), "shared": labels.shared,
            "joint": None if labels.joint is None else labels.joint.cpu()}


def labels_from_state(st: dict | None, device: torch.device) -> Labels | None:
    if st is None:
        return None
    return Labels(st["intra"].to(device), None if st["joint"] is None else st["joint"].to(device), st["shared"])


def memories_state(memories: torch.nn.ModuleDict) -> dict:
    return {"memories": {k: v.state_dict() for k, v in memories.items()},
            "memory_kinds": {k: type(v).__name__ for k, v in memories.items()}}


def memories_from_state(st: dict, temp: float, device: torch.device) -> torch.nn.ModuleDict:
    mems = torch.nn.ModuleDict()
    for k, sd in st["memories"].items():
        mems[k] = memory_from_state(st["memory_kinds"][k], sd, temp).to(device)
    return mems


def rng_state(cuda: bool) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if cuda else None}


def restore_rng(rng: dict, cuda: bool) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if cuda and rng["cuda"] is not None:
        torch.cuda.set_rng_state_all(rng["cuda"])


def load_model(checkpoint: str, device: str = "cpu") -> tuple[TwoStreamNet, Config]:
    """The model of a checkpoint (``<output>/checkpoint.pt``) and its configuration."""
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"eval: checkpoint not found: {checkpoint}")
    st = torch.load(checkpoint, map_location=device, weights_only=False)
    cfg = config_from_dict(st["config"])
    model = build_model(cfg.model.arch, None, cfg.model.non_local)
    model.load_state_dict(st["model"])
    return model.to(device), cfg
