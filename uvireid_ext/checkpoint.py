"""Checkpoint I/O of a training run: atomic writes, the run state's pieces (labels, memories, RNG
streams), the resume check, the log kept in step with the checkpoint, stale temporaries of killed
writers, and the model of a finished run."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable
from typing import IO

import numpy as np
import torch

from .cluster import Labels
from .config import RESUMABLE_CHANGES, STAGE_FIELDS, Config, config_from_dict
from .memory import memory_from_state
from .model import TwoStreamNet, build_model

__all__ = [
    "atomic_save",
    "atomic_write_text",
    "check_resumed_config",
    "execution",
    "execution_changes",
    "extend_schedule",
    "labels_from_state",
    "labels_state",
    "load_model",
    "memories_from_state",
    "memories_state",
    "read_checkpoint",
    "reconcile_log",
    "remove_stale_temporaries",
    "saved_config",
    "restore_rng",
    "rng_state",
]


def _atomic_write(path: str, mode: str, write: Callable[[IO], None]) -> None:
    """Write to ``<path>.tmp.<pid>``, flush it to disk, then rename over ``path``: a crash leaves either
    the old file or the new one, never a torn one (a kill inside leaves the temporary:
    :func:`remove_stale_temporaries`)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj: object, path: str) -> None:
    """``torch.save`` to ``path``, atomically."""
    _atomic_write(path, "wb", lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str) -> None:
    """``text`` to ``path``, atomically."""
    _atomic_write(path, "w", lambda f: f.write(text))


_TEMPORARY = re.compile(r"(?P<name>.+)\.tmp\.(?P<pid>[0-9]+)")


def _writer_alive(pid: int) -> bool:
    """Whether ``pid`` may still be writing. Our own pid cannot be: this process has written nothing yet
    (a reused pid, common in containers); pid 0 is no process (``os.kill(0, ...)`` would mean our group)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temporaries(folder: str, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Remove the ``<name>.tmp.<pid>`` files (``name`` one of ``names``) in ``folder`` that a writer killed
    inside :func:`atomic_save` left: those whose pid is no live process, or is ours. Returns (removed,
    kept: a live process other than this one has that pid and may be writing)."""
    removed, kept = [], []
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        m = _TEMPORARY.fullmatch(entry)
        path = os.path.join(folder, entry)
        if m is None or m["name"] not in names or not os.path.isfile(path):
            continue
        if _writer_alive(int(m["pid"])):
            kept.append(path)
        else:
            os.remove(path)
            removed.append(path)
    return removed, kept


def _epoch_of(line: str) -> int | None:
    """The epoch of a log line; None for a torn or foreign line."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec.get("epoch") if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) else None


def reconcile_log(path: str, lines: list[str] | None, epoch: int) -> tuple[list[str], str | None]:
    """Make the log at ``path`` hold exactly the log lines a checkpoint of ``epoch`` epochs keeps
    (``lines``, one per epoch), rewriting it atomically when it differs: lines of epochs the checkpoint
    does not have (or torn ones) go, lines it has but the file lacks come back. ``lines`` None (a
    checkpoint written before checkpoints kept the log): the file's lines of epochs below ``epoch`` stay.
    Returns (the log lines, what was changed or None)."""
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    present = text.splitlines()
    missing = None
    if lines is None:
        lines = [x for x in present if (e := _epoch_of(x)) is not None and e < epoch]
        lost = sorted(set(range(epoch)) - {_epoch_of(x) for x in lines})
        if lost:
            missing = (f"the checkpoint keeps no log lines (an older version wrote it), so the lines of epochs "
                       f"{lost} cannot be restored to {path}")
    want = "".join(x + "\n" for x in lines)
    if text == want:
        return lines, missing
    common = sum((Counter(present) & Counter(lines)).values())
    atomic_write_text(want, path)
    change = (f"{path} reconciled with the checkpoint ({epoch} epochs): dropped {len(present) - common} "
              f"line(s) of epochs the checkpoint does not have (or torn), restored {len(lines) - common} "
              f"line(s) the log lacked")
    return lines, change if missing is None else f"{change}; {missing}"


# numpy's RNG state is an array: the only non-tensor type a checkpoint holds, allowed by name so that
# every load can use weights_only=True (no arbitrary code from a foreign file)
_NUMPY_STATE = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
RESUME_KEYS = ("epoch", "config", "model", "optimizer", "scheduler", "memories", "memory_kinds", "fixed_labels",
               "rng")


def read_checkpoint(path: str, who: str = "train", keys: tuple[str, ...] = RESUME_KEYS) -> dict:
    """The state saved at ``path`` (on the CPU), loaded with ``weights_only=True``. A missing, empty,
    truncated or foreign file raises one error naming ``who`` and the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{who}: no checkpoint at {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{who}: checkpoint {path} is empty (0 bytes)")
    try:
        # on the CPU: RNG states must stay CPU byte tensors; load_state_dict moves the rest
        with torch.serialization.safe_globals(_NUMPY_STATE):
            st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{who}: cannot read checkpoint {path}: not a complete torch file written by "
                         f"uvireid_ext ({type(e).__name__}: {first})") from e
    missing = [k for k in keys if not isinstance(st, dict) or k not in st]
    if missing:
        what = f"a {type(st).__name__}" if not isinstance(st, dict) else f"keys {sorted(st)[:6]}"
        raise ValueError(f"{who}: {path} is not a uvireid_ext training checkpoint: it lacks {missing} "
                         f"(it holds {what})")
    return st


def execution(threads: int, device: torch.device, world_size: int = 1) -> dict:
    """What a checkpoint records of how its process ran: CPU threads, the device (a GPU by its model) and
    the number of processes training together."""
    return {"threads": threads, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "world_size": world_size}


def execution_changes(saved: dict | None, now: dict) -> list[str]:
    """How this process runs a resumed run differently (``execution``) from the one that wrote the
    checkpoint. Float reductions depend on all three and each rank draws its own batches, so such a resume
    continues the run, but not bit-exactly."""
    saved = saved or {}
    return [f"{k} {saved[k]!r} -> {now[k]!r}" for k in now if saved.get(k) is not None and saved[k] != now[k]]


def saved_config(st: dict, path: str, who: str = "train") -> Config:
    """The configuration a checkpoint was written with; a file from an incompatible version raises."""
    try:
        return config_from_dict(st["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{who}: {path} was written with a configuration this version cannot read ({e})") from e


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


def extend_schedule(cfg: Config, saved: dict, done: int, path: str) -> tuple[Config, list[str]]:
    """A resume with another ``optim.epochs`` (at least the ``done`` epochs of the checkpoint): the run
    keeps the stage epochs it started with (a share like "50%" stays resolved against the first total)
    and StepLR goes on stepping as before. Returns the configuration to resume with and what was kept."""
    was = saved.get("optim", {}).get("epochs", cfg.optim.epochs)
    if cfg.optim.epochs == was:
        return cfg, []
    if cfg.optim.epochs < done:
        raise ValueError(f"train: --resume with epochs={cfg.optim.epochs}, but the checkpoint {path} has already "
                         f"trained {done} epochs")
    recipe = dataclasses.replace(cfg.recipe)
    kept = []
    for name in STAGE_FIELDS:
        old = saved.get("recipe", {}).get(name, getattr(recipe, name))
        if old != getattr(recipe, name):
            kept.append(f"recipe.{name}={old!r} (not {getattr(recipe, name)!r})")
            setattr(recipe, name, old)
    return dataclasses.replace(cfg, recipe=recipe), kept


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
    st = read_checkpoint(checkpoint, "eval", keys=("config", "model"))
    cfg = saved_config(st, checkpoint, "eval")
    model = build_model(cfg.model.arch, None, cfg.model.non_local)
    try:
        model.load_state_dict(st["model"])
    except RuntimeError as e:
        raise ValueError(f"eval: {checkpoint}: the model weights do not fit arch {cfg.model.arch!r}: "
                         f"{str(e).splitlines()[0]}") from e
    return model.to(device), cfg
