"""Feature extraction of uint8 image sets held in memory: the one path used for the training set
(clustering, memories) and for the test protocol."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.transforms import normalize, to_float
from .distributed import all_gather_rows, rank_world
from .model import TwoStreamNet

__all__ = ["extract_features"]


@torch.no_grad()
def extract_features(model: TwoStreamNet, images: Tensor, is_ir: Tensor, *, device: torch.device,
                     batch: int = 256, flip: bool = True, renorm: bool = False, amp: bool = True,
                     channels_last: bool = True, with_pooled: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """BN features of uint8 ``images`` [N, H, W, 3] (``is_ir`` [N] bool picks each image's stem), in eval
    mode, L2-normalised and averaged with the flipped image's when ``flip`` (not re-normalised, as the
    clustering code does; ``renorm`` re-normalises, as the test code does). ``with_pooled`` also returns
    the GeM-pooled features of the unflipped images, as they are (MMM's prototypes), from the same pass.
    Under DDP each rank extracts every world-th image; the result is all-gathered back to dataset
    order. bf16 autocast and channels_last on CUDA."""
    if batch < 1:
        raise ValueError(f"extract_features: batch must be >= 1, got {batch}")
    rank, world = rank_world()
    cuda = device.type == "cuda"
    n = images.shape[0]
    idx = torch.arange(rank, n, world)
    was = model.training
    model.eval()
    feats, pooled = [], []
    try:
        for s in range(0, idx.numel(), batch):
            sel = idx[s : s + batch]
            x = normalize(to_float(images[sel.to(images.device)].to(device, non_blocking=True)))
            if cuda and channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            m = is_ir[sel.to(is_ir.device)].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp):
                p, f = model.forward_mixed(x, m)
                f = F.normalize(f.float(), dim=1)
                if with_pooled:
                    pooled.append(p.float())
                if flip:
                    f2 = model.forward_mixed(torch.flip(x, dims=[3]), m)[1].float()
                    f = (f + F.normalize(f2, dim=1)) / 2
            feats.append(f)
    finally:
        model.train(was)

    def gathered(parts: list[Tensor]) -> Tensor:
        out = all_gather_rows(torch.cat(parts) if parts else torch.zeros(0, model.feat_dim, device=device))
        if world > 1:  # rank-strided shares back to dataset order
            order = torch.cat([torch.arange(r, n, world) for r in range(world)])
            ordered = torch.empty_like(out)
            ordered[order.to(out.device)] = out
            out = ordered
        return out

    out = gathered(feats)
    out = F.normalize(out, dim=1) if renorm else out
    return (out, gathered(pooled)) if with_pooled else out
