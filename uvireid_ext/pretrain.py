"""A stand-in for ImageNet weights where none can be downloaded: supervised identity classification of
visible images only, on a set whose identities and cameras the training set does not share.

The published recipes start from ImageNet weights, which already give visible and infrared images of a
person somewhat similar features; their cross-modality steps (joint clustering, MMLM's matching) build on
that. A network from random initialisation gives none (``docs/synthetic.md``). This pretraining gives the
demo the same kind of start without showing the network a single infrared image or a training identity:
the second view of every image is channel-exchanged, as in the re-ID loop, so the features learn to rely
on what survives the loss of colour. The result is a torchvision-format state dict, loaded like ImageNet
weights (``build_model(arch, weights=path)``: both stems and the shared layers).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.samplers import IdentitySampler
from .data.transforms import augment
from .model import build_model

__all__ = ["pretrain_visible"]

TEMPERATURE = 0.05  # cosine classifier at the ClusterNCE's temperature


def pretrain_visible(images: Tensor, pid: Tensor, cameras: Tensor | None = None, arch: str = "small", *,
                     iters: int = 1200, ids_per_batch: int = 8, instances: int = 4, lr: float = 2e-3,
                     weight_decay: float = 5e-4, pad: int = 2,
                     seed: int = 0) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Train ``arch`` to classify the identities ``pid`` [N] (-1: unlabelled, never drawn) of the visible
    ``images`` [N, H, W, 3] uint8 taken by ``cameras`` [N] (default: one camera).

    Each iteration draws a batch as the re-ID loop does (:class:`~uvireid_ext.data.samplers.IdentitySampler`:
    ``ids_per_batch`` identities × ``instances`` images, spread over cameras), two views per image (plain and
    channel-exchanged, both through the visible stem), cross-entropy of a bias-free cosine classifier at
    temperature 0.05; Adam. Everything random comes from ``seed``; the global random state is left as it was.

    Returns the torchvision-format state dict of the visible stem and the shared layers (``conv1.*``,
    ``bn1.*``, ``layer1-4.*``) and a summary: identities, images, iterations, the mean loss over the first
    and the last tenth of the iterations."""
    op = "pretrain_visible"
    if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"{op}: images must be [N, H, W, 3] uint8, got {tuple(images.shape)} {images.dtype}")
    n = images.shape[0]
    if pid.shape != (n,):
        raise ValueError(f"{op}: pid must be [N] = [{n}], got {tuple(pid.shape)}")
    cameras = torch.zeros(n, dtype=torch.int64) if cameras is None else cameras
    if cameras.shape != (n,):
        raise ValueError(f"{op}: cameras must be [N] = [{n}], got {tuple(cameras.shape)}")
    for name, v, low in (("iters", iters, 1), ("ids_per_batch", ids_per_batch, 1), ("instances", instances, 1),
                         ("pad", pad, 0), ("seed", seed, 0)):
        if v < low:
            raise ValueError(f"{op}: {name} must be >= {low}, got {v}")
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(f"{op}: lr must be > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    pid = pid.cpu()
    sampler = IdentitySampler(pid, cameras)
    if ids_per_batch > len(sampler):
        raise ValueError(f"{op}: ids_per_batch={ids_per_batch} exceeds the {len(sampler)} labelled identities "
                         "in pid")
    y = torch.as_tensor(np.searchsorted(sampler.ids, pid.numpy()))  # class of each labelled image
    rng = np.random.default_rng([seed, 7])
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch)
        head = nn.Linear(model.feat_dim, len(sampler), bias=False)
        nn.init.normal_(head.weight, 0.0, 0.001)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=lr, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    visible = torch.zeros(2 * ids_per_batch * instances, dtype=torch.bool)
    for _ in range(iters):
        b = torch.as_tensor(sampler.batch(ids_per_batch, instances, rng))
        x = torch.cat([augment(images[b], g, pad=pad), augment(images[b], g, pad=pad, exchange=True)])
        _, bn = model(x, visible)
        loss = F.cross_entropy(head(F.normalize(bn, dim=1)) / TEMPERATURE, torch.cat([y[b], y[b]]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tenth = max(1, math.ceil(iters / 10))
    state = {k.split(".", 1)[1] if k.startswith("visible.") else k: v.detach().clone()
             for k, v in model.state_dict().items() if k.startswith(("visible.", "layer"))}
    info = {"ids": float(len(sampler)), "images": float(n), "iters": float(iters),
            "loss_first": sum(losses[:tenth]) / tenth, "loss_last": sum(losses[-tenth:]) / tenth}
    return state, info
