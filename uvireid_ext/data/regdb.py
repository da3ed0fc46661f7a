"""RegDB: the folder tree, the per-trial index files, and the standard test lists.

Layout (``data_root``)::

    Visible/<id>/<name>.bmp, Thermal/<id>/<name>.bmp      ids 1..412, 10 images per person per modality
    idx/{train,test}_{visible,thermal}_{1..10}.txt         lines "<relative image path> <integer label>"

Trials 1..10 each have their own train/test identity split; visible is camera/modality 1, thermal 2.
"""

from __future__ import annotations

import os

import numpy as np

from . import missing

LAYOUT = (
    "  <root>/Visible/<id>/<name>.bmp, <root>/Thermal/<id>/<name>.bmp\n"
    "  <root>/idx/{train,test}_{visible,thermal}_{1..10}.txt   (lines: <relative path> <label>)\n"
    "  (python -m uvireid_ext make-data --kind regdb writes a synthetic tree)"
)

MODALITIES = ("visible", "thermal")
TRIALS = range(1, 11)


def _read_list(data_root: str, split: str, trial: int, modality: str) -> tuple[list[str], np.ndarray]:
    if modality not in MODALITIES:
        raise ValueError(f"RegDB modality must be 'visible' or 'thermal', got {modality!r}")
    if trial not in TRIALS:
        raise ValueError(f"RegDB trial must be 1..10, got {trial}")
    path = os.path.join(data_root, "idx", f"{split}_{modality}_{trial}.txt")
    if not os.path.isfile(path):
        raise missing(path, LAYOUT)
    files, labels = [], []
    with open(path) as f:
        for n, line in enumerate(f.read().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(" ")
            try:
                files.append(os.path.join(data_root, parts[0]))
                labels.append(int(parts[1]))
            except (IndexError, ValueError) as e:
                raise ValueError(
                    f"{path}:{n}: expected '<relative path> <integer label>', got {line!r}"
                ) from e
    return files, np.array(labels, dtype=np.int64)


def process_test_regdb(
    data_root: str, trial: int = 1, modality: str = "visible"
) -> tuple[list[str], np.ndarray]:
    """Test list of one trial and modality: (paths, labels). Query/gallery are whole lists (no sampling):
    visible->thermal uses visible as query, thermal as gallery; thermal->visible the reverse."""
    files, labels = _read_list(data_root, "test", trial, modality)
    check_images(files)
    return files, labels


def load_regdb_train(data_root: str, trial: int = 1) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Training lists of one trial: (visible paths, labels, thermal paths, labels); labels are the class
    indices (0..205 in the real set)."""
    v = _read_list(data_root, "train", trial, "visible")
    t = _read_list(data_root, "train", trial, "thermal")
    check_images(v[0])
    check_images(t[0])
    return v[0], v[1], t[0], t[1]


def check_images(files: list[str]) -> None:
    """Raise naming the first listed image that does not exist."""
    for p in files:
        if not os.path.isfile(p):
            raise missing(p, LAYOUT)
