"""Synthetic SYSU-MM01- and RegDB-shaped data sets: procedurally drawn people (``uvireid_ext.data.people``:
identities, cameras, rendering) written in the real sets' folder layout, id lists and file naming, so the
loaders and protocols run on them unchanged. ``docs/synthetic.md`` describes the generative model.

Sample counts per (identity, camera) vary as in SYSU-MM01: a per-identity activity times a per-camera
gamma draw, with a floor of 10 for the test identities' gallery (multi-shot draws 10). Deterministic per
seed (independent NumPy generators per identity, camera and image).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .people import (  # noqa: F401  (re-exported: the generator's public names live on here too)
    CLOTHING,
    MATERIALS,
    N_PARTS,
    PATTERN,
    TOP,
    Camera,
    Person,
    ir_response,
    lightness,
    make_camera,
    make_person,
    part_intensity,
    render,
)

__all__ = [
    "MATERIALS",
    "Camera",
    "Person",
    "ir_response",
    "make_camera",
    "make_person",
    "make_regdb",
    "make_sysu",
    "read_marker",
    "render",
]

MARKER = "synthetic.json"  # written at the root of every generated set: its generator and parameters
GENERATOR_VERSION = 2


def _split(n: int, fractions: tuple[float, ...]) -> list[int]:
    sizes = [max(1, round(n * f)) for f in fractions[:-1]]
    return sizes + [n - sum(sizes)]


def _write_ids(path: str, ids: list[int]) -> None:
    with open(path, "w") as f:
        f.write(",".join(str(i) for i in ids) + "\n")


def _check_range(op: str, name: str, value: float, low: float, high: float | None = None) -> None:
    if not (value >= low and (high is None or value <= high)):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{op}: {name} must be {bound}, got {value!r}")


def _counts(rng: np.random.Generator, mean: float, floor: int, cap: int) -> int:
    """Images of one (identity, camera): a gamma draw around ``mean`` (coefficient of variation 0.5)."""
    return int(np.clip(round(rng.gamma(4.0, mean / 4.0)), floor, cap))


def make_sysu(
    out: str,
    ids: int = 48,
    seed: int = 0,
    per_camera: int = 12,
    size: tuple[int, int] = (64, 128),
    test_ids: int | None = None,
    vary_counts: bool = True,
) -> dict[str, int]:
    """Write a SYSU-MM01-shaped tree to ``out``: cam1..cam6/PPPP/NNNN.jpg and exp/{train,val,test,
    available}_id.txt. Ids split about 296:99:96 like the real set, or ``test_ids`` test identities and
    the rest 296:99 into train and val. Every identity appears in cam3 (IR), cam4, cam5 (RGB) and cam6
    (IR); about 60 % of each split also in the indoor cameras cam1, cam2 (so indoor search has queries
    without a match, as in the real set). ``per_camera``: the mean number of images per (identity,
    camera) when ``vary_counts`` (each identity has an activity level, each camera a gamma draw; test
    identities keep at least 10 per visible camera for multi-shot), else exactly ``per_camera + 0..3``
    (at least 10). ``size`` is (width, height). Returns counts."""
    op = "make_sysu"
    _check_range(op, "ids", ids, 6)
    _check_range(op, "per_camera", per_camera, 2 if vary_counts else 10)
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"{op}: size must be (width, height), each >= 8, got {size!r}")
    if test_ids is not None:
        _check_range(op, "test_ids", test_ids, 1, ids - 2)
    root = np.random.default_rng([seed, 0])
    cams = {k: make_camera(np.random.default_rng([seed, 1, k]), k in (3, 6), size) for k in range(1, 7)}
    pids = list(range(1, ids + 1))
    order = root.permutation(pids).tolist()
    if test_ids is None:
        n_train, n_val, _ = _split(ids, (296 / 491, 99 / 491, 96 / 491))
    else:
        n_train, n_val = _split(ids - test_ids, (296 / 395, 99 / 395))
    split = {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
    test_set = set(split["test"])
    os.makedirs(os.path.join(out, "exp"), exist_ok=True)
    for name, lst in split.items():
        _write_ids(os.path.join(out, "exp", f"{name}_id.txt"), lst)
    _write_ids(os.path.join(out, "exp", "available_id.txt"), pids)
    # About 60 % of every split is also seen indoors (cam1, cam2), spread so that any split of >= 2 ids
    # has an outdoor-only id (in the real test set 40 of 96 ids are never in cam1/cam2).
    start = {"train": 0, "val": n_train, "test": n_train + n_val}
    indoor_ids = {
        pid
        for name, s in start.items()
        for i, pid in enumerate(order[s : s + len(split[name])])
        if i % 5 in (0, 2, 4)
    }
    counts = {f"cam{k}": 0 for k in range(1, 7)}
    for pid in pids:
        prng = np.random.default_rng([seed, 2, pid])
        person = make_person(prng)
        activity = prng.uniform(0.6, 1.4)  # some people pass the cameras more often
        indoor = pid in indoor_ids
        for k in (1, 2, 3, 4, 5, 6):
            if k in (1, 2) and not indoor:
                continue
            folder = os.path.join(out, f"cam{k}", f"{pid:04d}")
            os.makedirs(folder, exist_ok=True)
            if vary_counts:
                floor = 10 if (pid in test_set and k not in (3, 6)) else 2
                n_img = _counts(prng, per_camera * activity, floor, 4 * per_camera)
            else:
                n_img = per_camera + int(prng.integers(0, 4))
            for i in range(1, n_img + 1):
                img = render(person, cams[k], np.random.default_rng([seed, 3, pid, k, i]), size)
                img.save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)
            counts[f"cam{k}"] += n_img
    counts.update({f"{k}_ids": len(v) for k, v in split.items()})
    _write_marker(out, "sysu", {"ids": ids, "seed": seed, "per_camera": per_camera, "size": list(size),
                                "test_ids": test_ids, "vary_counts": vary_counts}, counts)
    return counts


def _write_marker(out: str, kind: str, params: dict, counts: dict) -> None:
    with open(os.path.join(out, MARKER), "w") as f:
        json.dump({"kind": kind, "version": GENERATOR_VERSION, "params": params, "counts": counts}, f, indent=1)


def read_marker(root: str) -> dict | None:
    """The generator record of a set written by :func:`make_sysu` / :func:`make_regdb`, None if ``root``
    holds none (not a generated set, or one from before the record existed)."""
    path = os.path.join(root, MARKER)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"synthetic: cannot read the generator record {path}: {e}") from e


def make_regdb(
    out: str, ids: int = 40, seed: int = 0, per_modality: int = 10, size: tuple[int, int] = (64, 128)
) -> dict[str, int]:
    """Write a RegDB-shaped tree to ``out``: Visible/<id>/<g>_<view>_v_<serial>_<k>.bmp, the matching
    Thermal/<id>/..._t_... (visible/thermal pairs share the pose, as RegDB's dual camera does) and
    idx/{train,test}_{visible,thermal}_{1..10}.txt with a random half/half id split per trial; labels are
    0..n-1 in ascending id order within each list. Returns counts."""
    _check_range("make_regdb", "ids", ids, 2)
    _check_range("make_regdb", "per_modality", per_modality, 1)
    cam_v = make_camera(np.random.default_rng([seed, 1, 1]), False, size)
    cam_t = make_camera(np.random.default_rng([seed, 1, 2]), "thermal", size)
    names: dict[int, list[tuple[str, str]]] = {}
    for pid in range(1, ids + 1):
        prng = np.random.default_rng([seed, 2, pid])
        person = make_person(prng)
        gender = "male" if prng.random() < 0.5 else "female"
        os.makedirs(os.path.join(out, "Visible", str(pid)), exist_ok=True)
        os.makedirs(os.path.join(out, "Thermal", str(pid)), exist_ok=True)
        names[pid] = []
        for k in range(1, per_modality + 1):
            state = np.random.default_rng([seed, 3, pid, k])
            pose_seed = int(state.integers(2**32))
            view = "front" if k <= per_modality // 2 else "back"
            serial = pid * 100 + k
            v_rel = f"Visible/{pid}/{gender}_{view}_v_{serial:05d}_{k}.bmp"
            t_rel = f"Thermal/{pid}/{gender}_{view}_t_{serial:05d}_{k}.bmp"
            render(person, cam_v, np.random.default_rng(pose_seed), size).save(os.path.join(out, v_rel))
            render(person, cam_t, np.random.default_rng(pose_seed), size).save(os.path.join(out, t_rel))
            names[pid].append((v_rel, t_rel))
    os.makedirs(os.path.join(out, "idx"), exist_ok=True)
    n_train = ids // 2
    for trial in range(1, 11):
        perm = np.random.default_rng([seed, 4, trial]).permutation(np.arange(1, ids + 1)).tolist()
        for split, members in (("train", sorted(perm[:n_train])), ("test", sorted(perm[n_train:]))):
            for m, modality in ((0, "visible"), (1, "thermal")):
                with open(os.path.join(out, "idx", f"{split}_{modality}_{trial}.txt"), "w") as f:
                    for label, pid in enumerate(members):
                        for pair in names[pid]:
                            f.write(f"{pair[m]} {label}\n")
    counts = {"ids": ids, "visible": ids * per_modality, "thermal": ids * per_modality, "train_ids": n_train}
    _write_marker(out, "regdb", {"ids": ids, "seed": seed, "per_modality": per_modality, "size": list(size)}, counts)
    return counts
