"""Data: SYSU-MM01 and RegDB loaders with the standard test protocols, and a synthetic generator of
data sets with the same layout (``python -m uvireid_ext make-data``)."""

from __future__ import annotations

import os

import numpy as np
import torch

# The standard input size (W x H) and normalisation of the VI-ReID test pipelines.
IMG_WIDTH, IMG_HEIGHT = 144, 288
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def missing(path: str, layout: str) -> FileNotFoundError:
    """The error raised for a missing file or folder: names the path and the expected layout."""
    return FileNotFoundError(f"{path} not found; expected layout:\n{layout}")


def read_resized(path: str, width: int = IMG_WIDTH, height: int = IMG_HEIGHT) -> np.ndarray:
    """An image as HWC uint8 RGB, resized with LANCZOS (PIL's former ANTIALIAS) like the standard code."""
    from PIL import Image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((width, height), Image.LANCZOS)
            return np.array(im, dtype=np.uint8)  # a writable copy
    except OSError as e:
        raise OSError(f"cannot read image {path}: {e}") from e


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW float32, scaled to [0, 1] and ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def load_test_image(path: str) -> torch.Tensor:
    """The standard test transform: read, resize to 144x288, to tensor, normalise -> (3, 288, 144)."""
    return to_tensor(read_resized(path))


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_HEIGHT",
    "IMG_WIDTH",
    "load_test_image",
    "read_resized",
    "to_tensor",
]
