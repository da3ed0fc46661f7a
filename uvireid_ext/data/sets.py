"""Training and evaluation sets held in memory (uint8 HWC at the training size), loaded once per run."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..modality import Modality
from . import read_resized

__all__ = ["EvalSet", "TrainSet", "load_eval_set", "load_train_set"]


@dataclass
class TrainSet:
    images: Tensor  # [N, H, W, 3] uint8
    modality: Tensor  # [N] int64 Modality values
    camera: Tensor  # [N] int64
    pid: Tensor  # [N] int64 ground-truth identity (ARI and oracle labels only; -1 = unknown)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class EvalSet:
    """Query and per-trial gallery images, loaded once; the galleries hold the other modality."""

    dataset: str
    query: Tensor
    q_pid: np.ndarray
    q_cam: np.ndarray
    q_modality: Modality
    galleries: list[tuple[Tensor, np.ndarray, np.ndarray]] = field(default_factory=list)


def _load_images(paths: list[str], height: int, width: int) -> Tensor:
    if not paths:
        return torch.zeros(0, height, width, 3, dtype=torch.uint8)
    return torch.from_numpy(np.stack([read_resized(p, width, height) for p in paths]))


def _check_root(root: str) -> None:
    if not root:
        raise ValueError("train: no data root given (--data-root DIR)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"train: data root not found: {root}")


def _unknown(dataset: str) -> ValueError:
    return ValueError(f"train: unknown dataset {dataset!r}; expected 'sysu' or 'regdb'")


def load_train_set(dataset: str, root: str, height: int, width: int, trial: int = 1) -> TrainSet:
    """The training images of SYSU-MM01 (the raw tree; the prepared ``train_*_resized_img.npy`` arrays
    when present) or of one RegDB trial, resized to height × width. A missing or unreadable image raises
    naming its path."""
    _check_root(root)
    vis, ir = int(Modality.VISIBLE), int(Modality.INFRARED)
    if dataset == "sysu":
        from .sysu import load_sysu_train, parse_path, train_files

        if os.path.isfile(os.path.join(root, "train_rgb_resized_img.npy")):
            rv, lv, cv, ri, lr, cr = load_sysu_train(root)
            if cv is None or cr is None:
                raise FileNotFoundError(
                    f"train: {root} has prepared arrays without train_*_resized_cam.npy; re-run prepare_sysu"
                )
            imgs = torch.from_numpy(np.concatenate([rv, ri]))
            if imgs.shape[1:3] != (height, width):
                imgs = F.interpolate(imgs.permute(0, 3, 1, 2).float(), (height, width), mode="bilinear",
                                     antialias=True).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            mod = np.r_[np.full(len(rv), vis), np.full(len(ri), ir)]
            return TrainSet(imgs.contiguous(), torch.as_tensor(mod, dtype=torch.int64),
                            torch.as_tensor(np.r_[cv, cr], dtype=torch.int64),
                            torch.as_tensor(np.r_[lv, lr], dtype=torch.int64))
        rgb, irf = train_files(root)
        paths = rgb + irf
        cams, pids = zip(*(parse_path(p) for p in paths), strict=True) if paths else ((), ())
        mod = [vis] * len(rgb) + [ir] * len(irf)
        return TrainSet(_load_images(paths, height, width), torch.tensor(mod, dtype=torch.int64),
                        torch.tensor(cams, dtype=torch.int64), torch.tensor(pids, dtype=torch.int64))
    if dataset == "regdb":
        from .regdb import load_regdb_train

        vp, vl, tp, tl = load_regdb_train(root, trial)
        n_v, n_t = len(vp), len(tp)
        return TrainSet(_load_images(vp + tp, height, width),
                        torch.tensor([vis] * n_v + [ir] * n_t, dtype=torch.int64),
                        torch.zeros(n_v + n_t, dtype=torch.int64),  # one camera per modality
                        torch.as_tensor(np.r_[vl, tl], dtype=torch.int64))
    raise _unknown(dataset)


def load_eval_set(dataset: str, root: str, height: int, width: int, *, mode: str = "all",
                  trials: int | Iterable[int] = 10, trial: int = 1, shot: int = 1,
                  direction: str | None = None) -> EvalSet:
    """SYSU: infrared queries (cam3, cam6) and one gallery per trial (``trials``: a count n for trials
    0..n-1, or the trial numbers), ``shot`` images per identity and camera, infrared → visible only.
    RegDB: the test lists of ``trial``; ``direction`` "v2t" (default) or "t2v" picks the query list."""
    _check_root(root)
    if dataset == "sysu":
        from .sysu import process_gallery_sysu, process_query_sysu

        if direction not in (None, "t2v"):
            raise ValueError(f"load_eval_set: SYSU-MM01's protocol is infrared → visible (t2v), got direction "
                             f"{direction!r}")
        q, qp, qc = process_query_sysu(root, mode)
        cache: dict[str, Tensor] = {}
        out = EvalSet(dataset, _load_images(q, height, width), qp, qc, Modality.INFRARED)
        for t in range(trials) if isinstance(trials, int) else trials:
            g, gp, gc = process_gallery_sysu(root, mode, trial=t, shot=shot)
            missing = [p for p in g if p not in cache]
            for p, img in zip(missing, _load_images(missing, height, width), strict=True):
                cache[p] = img
            out.galleries.append((torch.stack([cache[p] for p in g]), gp, gc))
        return out
    if dataset == "regdb":
        from .regdb import process_test_regdb

        if direction not in (None, "v2t", "t2v"):
            raise ValueError(f"load_eval_set: direction must be 'v2t' or 't2v', got {direction!r}")
        v, vp = process_test_regdb(root, trial, "visible")
        t, tp = process_test_regdb(root, trial, "thermal")
        v_img, t_img = _load_images(v, height, width), _load_images(t, height, width)
        if direction == "t2v":
            out = EvalSet(dataset, t_img, tp, 2 * np.ones_like(tp), Modality.INFRARED)
            out.galleries.append((v_img, vp, np.ones_like(vp)))
        else:
            out = EvalSet(dataset, v_img, vp, np.ones_like(vp), Modality.VISIBLE)
            out.galleries.append((t_img, tp, 2 * np.ones_like(tp)))
        return out
    raise _unknown(dataset)
