"""SYSU-MM01: the raw tree, the prepared training arrays, and the standard query/gallery construction.

Raw tree (``data_root``)::

    cam1/ ... cam6/<PPPP>/<NNNN>.jpg     one folder per identity per camera (4-digit, zero-padded)
    exp/train_id.txt, val_id.txt, test_id.txt   one line of comma-separated integer ids

cam1, cam2, cam4, cam5 are visible (RGB); cam3, cam6 infrared. cam3 shares its location with cam2.

Prepared training arrays (written by :func:`prepare_sysu` into ``data_root``, read by
:func:`load_sysu_train`): ``train_{rgb,ir}_resized_img.npy`` (N x 288 x 144 x 3 uint8) and
``train_{rgb,ir}_resized_label.npy`` (N int labels 0..C-1), the standard names; we also write
``train_{rgb,ir}_resized_cam.npy`` (camera numbers, which camera-aware clustering needs).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence

import numpy as np

from . import missing, read_resized

logger = logging.getLogger(__name__)

LAYOUT = (
    "  <root>/cam1 ... cam6/<PPPP>/<NNNN>.jpg   (identity folders: 4-digit zero-padded ids)\n"
    "  <root>/exp/{train,val,test}_id.txt        (one line of comma-separated integer ids)\n"
    "  <root>/train_{rgb,ir}_resized_{img,label}.npy   (prepared training arrays; "
    "python -m uvireid_ext make-data writes a synthetic tree)"
)

RGB_CAMERAS = ("cam1", "cam2", "cam4", "cam5")
IR_CAMERAS = ("cam3", "cam6")
GALLERY_CAMERAS = {"all": RGB_CAMERAS, "indoor": ("cam1", "cam2")}


def read_ids(data_root: str, split: str) -> list[str]:
    """The ids of ``exp/<split>_id.txt`` as 4-digit strings, in file order."""
    path = os.path.join(data_root, "exp", f"{split}_id.txt")
    if not os.path.isfile(path):
        raise missing(path, LAYOUT)
    with open(path) as f:
        lines = f.read().splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path} is empty; expected one line of comma-separated ids")
    try:
        return [f"{int(y):04d}" for y in lines[0].split(",") if y.strip()]
    except ValueError as e:
        raise ValueError(f"{path}: expected comma-separated integers on the first line ({e})") from e


def _check_cameras(data_root: str, cameras: Sequence[str]) -> None:
    for cam in cameras:
        path = os.path.join(data_root, cam)
        if not os.path.isdir(path):
            raise missing(path, LAYOUT)


def _folder_files(data_root: str, cam: str, pid: str) -> list[str] | None:
    """Sorted image paths of one (camera, identity) folder, None when the identity is not in the camera."""
    img_dir = os.path.join(data_root, cam, pid)
    if not os.path.isdir(img_dir):
        return None
    return sorted(img_dir + "/" + name for name in os.listdir(img_dir))


def parse_path(path: str) -> tuple[int, int]:
    """(camera number, identity) of ``.../camK/PPPP/NNNN.jpg`` (the standard code reads the same
    characters at fixed offsets from the end)."""
    parts = path.replace(os.sep, "/").split("/")
    cam, pid = parts[-3], parts[-2]
    if not (cam.startswith("cam") and cam[3:].isdigit() and pid.isdigit()):
        raise ValueError(f"not a SYSU-MM01 image path (camK/PPPP/NNNN.jpg): {path}")
    return int(cam[3:]), int(pid)


def _with_labels(files: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    cams, pids = zip(*(parse_path(p) for p in files), strict=True) if files else ((), ())
    return files, np.array(pids, dtype=np.int64), np.array(cams, dtype=np.int64)


def _check_mode(mode: str) -> None:
    if mode not in GALLERY_CAMERAS:
        raise ValueError(f"SYSU-MM01 mode must be 'all' or 'indoor', got {mode!r}")


def process_query_sysu(data_root: str, mode: str = "all") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Queries: every cam3 and cam6 image of the test ids (both modes), ids sorted, cam3 before cam6,
    file names sorted. Returns (paths, pids, camids)."""
    _check_mode(mode)
    _check_cameras(data_root, IR_CAMERAS)
    files: list[str] = []
    for pid in sorted(read_ids(data_root, "test")):
        for cam in IR_CAMERAS:
            found = _folder_files(data_root, cam, pid)
            if found:
                files.extend(found)
    return _with_labels(files)


def process_gallery_sysu(
    data_root: str, mode: str = "all", trial: int = 0, shot: int = 1
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Gallery of one trial, drawn exactly as the standard code does: seed Python's Mersenne Twister with
    ``trial``, walk the sorted test ids and, per id, the cameras (1, 2, 4, 5 for "all"; 1, 2 for "indoor");
    from every existing folder's sorted file list take ``random.choice`` (single-shot) or
    ``random.sample(files, shot)`` (multi-shot, the MMM convention). A private ``random.Random(trial)``
    gives the same draws as ``random.seed(trial)`` without touching the global state.
    Returns (paths, pids, camids)."""
    _check_mode(mode)
    if shot < 1:
        raise ValueError(f"process_gallery_sysu: shot must be >= 1, got {shot}")
    cameras = GALLERY_CAMERAS[mode]
    _check_cameras(data_root, cameras)
    rng = random.Random(trial)
    files: list[str] = []
    for pid in sorted(read_ids(data_root, "test")):
        for cam in cameras:
            found = _folder_files(data_root, cam, pid)
            if not found:
                continue
            if shot == 1:
                files.append(rng.choice(found))
            else:
                if len(found) < shot:
                    raise ValueError(
                        f"{os.path.join(data_root, cam, pid)} holds {len(found)} images, "
                        f"fewer than shot={shot}"
                    )
                files.extend(rng.sample(found, shot))
    return _with_labels(files)


def train_files(data_root: str) -> tuple[list[str], list[str]]:
    """Training image paths (train + val ids, the standard 395-id training set): (rgb, ir); ids sorted,
    cameras in order, file names sorted."""
    _check_cameras(data_root, RGB_CAMERAS + IR_CAMERAS)
    ids = sorted(set(read_ids(data_root, "train")) | set(read_ids(data_root, "val")))
    rgb: list[str] = []
    ir: list[str] = []
    for pid in ids:
        for cam in RGB_CAMERAS:
            rgb.extend(_folder_files(data_root, cam, pid) or [])
        for cam in IR_CAMERAS:
            ir.extend(_folder_files(data_root, cam, pid) or [])
    return rgb, ir


def prepare_sysu(data_root: str) -> dict[str, int]:
    """Write the prepared training arrays into ``data_root`` (as the standard ``pre_process_sysu.py``):
    images resized to 144 x 288 with LANCZOS, HWC uint8; labels 0..C-1 assigned in ascending order of the
    ids found in the infrared list. Returns the counts written."""
    rgb, ir = train_files(data_root)
    pid2label = {pid: label for label, pid in enumerate(sorted({parse_path(p)[1] for p in ir}))}
    counts = {}
    for name, files in (("rgb", rgb), ("ir", ir)):
        kept = [p for p in files if parse_path(p)[1] in pid2label]
        if len(kept) < len(files):
            logger.info(
                "sysu: %d %s images of ids without infrared images left out", len(files) - len(kept), name
            )
        imgs = np.stack([read_resized(p) for p in kept]) if kept else np.zeros((0, 288, 144, 3), np.uint8)
        labels = np.array([pid2label[parse_path(p)[1]] for p in kept], dtype=np.int64)
        cams = np.array([parse_path(p)[0] for p in kept], dtype=np.int64)
        np.save(os.path.join(data_root, f"train_{name}_resized_img.npy"), imgs)
        np.save(os.path.join(data_root, f"train_{name}_resized_label.npy"), labels)
        np.save(os.path.join(data_root, f"train_{name}_resized_cam.npy"), cams)
        counts[name] = len(kept)
    return counts


def load_sysu_train(
    data_root: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray | None]:
    """The prepared training arrays: (rgb_img, rgb_label, rgb_cam, ir_img, ir_label, ir_cam); the camera
    arrays are None when the data root has only the four standard files."""
    out = []
    for name in ("rgb", "ir"):
        for kind in ("img", "label", "cam"):
            path = os.path.join(data_root, f"train_{name}_resized_{kind}.npy")
            if not os.path.isfile(path):
                if kind == "cam":
                    out.append(None)
                    continue
                raise missing(
                    path, LAYOUT + "\n(run uvireid_ext.data.sysu.prepare_sysu(root) to create them)"
                )
            try:
                out.append(np.load(path))
            except (ValueError, EOFError, OSError) as e:
                raise ValueError(f"sysu: cannot read {path} ({e}); re-create it with prepare_sysu(root)") from e
    return tuple(out)  # type: ignore[return-value]
