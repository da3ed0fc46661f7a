"""Feature extraction of uint8 image sets held in memory: the one path used for the training set
(clustering, memories) and for the test protocol, for ``TwoStreamNet`` and for any model with the
standard VI-ReID interface ``model(x, flag)`` (``docs/protocols.md``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.transforms import normalize, to_float
from .distributed import all_gather_rows, rank_world
from .modality import StemFlag
from .model import TwoStreamNet
from .progress import progress as progress_bar

__all__ = ["extract_features"]


def _pick(out: Any, output: int | None) -> Tensor:
    """The feature a standard-interface model returned: the tensor, or ``out[output]`` of a tuple."""
    if isinstance(out, (tuple, list)):
        if output is None:
            raise ValueError(
                f"extract_features: the model returned {len(out)} outputs; pass output=<index> "
                "(AGW-style models: 0 = pooled, 1 = BN feature)"
            )
        return out[output]
    if output not in (None, 0):
        raise ValueError(f"extract_features: output={output} but the model returned a single tensor")
    return out


def _forward(model: torch.nn.Module, x: Tensor, is_ir: Tensor, output: int | None) -> tuple[Tensor, Tensor | None]:
    """(feature, pooled) of a batch. TwoStreamNet: one mixed pass, feature = BN (``output`` 1, the default)
    or pooled (0). Other models: ``model(x, flag)`` once per modality present, ``output`` picking a tuple
    member; no pooled features."""
    if isinstance(model, TwoStreamNet):
        pooled, bn = model.forward_mixed(x, is_ir)
        return (bn if output in (None, 1) else pooled), pooled
    parts: list[tuple[Tensor, Tensor]] = []
    for flag, sel in ((StemFlag.VISIBLE, ~is_ir), (StemFlag.INFRARED, is_ir)):
        if bool(sel.any()):
            parts.append((sel, _pick(model(x if bool(sel.all()) else x[sel], flag), output)))
    if len(parts) == 1:
        return parts[0][1], None
    f = torch.empty((x.shape[0], *parts[0][1].shape[1:]), dtype=parts[0][1].dtype, device=parts[0][1].device)
    for sel, part in parts:
        f[sel] = part.to(f.dtype)
    return f, None


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: Tensor, is_ir: Tensor, *,
                     device: torch.device | str | None = None, batch: int = 256, flip: bool = True,
                     renorm: bool = False, amp: bool = True, channels_last: bool = True, with_pooled: bool = False,
                     output: int | None = None, progress: bool = False,
                     desc: str = "features") -> Tensor | tuple[Tensor, Tensor]:
    """Features of uint8 ``images`` [N, H, W, 3] (``is_ir`` [N] bool picks each image's stem), in eval
    mode, L2-normalised and averaged with the flipped image's when ``flip`` (not re-normalised, as the
    clustering code does; ``renorm`` re-normalises, as the test code does).

    ``model``: a ``TwoStreamNet`` (feature: the BN neck's, ``output=0`` the pooled one), or any module
    with the standard interface ``model(x, flag)``, x a float [B, 3, H, W] ImageNet-normalised batch and
    flag a :class:`~uvireid_ext.modality.StemFlag` (1 visible, 2 infrared), returning a [B, D] tensor or
    a tuple of them (``output`` picks one; AGW-style models return (pooled, bn)).
    ``with_pooled`` (TwoStreamNet only) also returns the GeM-pooled features of the unflipped images, as
    they are (MMM's prototypes), from the same pass. ``device``: default the model's. Under DDP each rank
    extracts every world-th image; the result is all-gathered back to dataset order. bf16 autocast
    (``amp``) and ``channels_last`` on CUDA. The model's train/eval mode is restored."""
    if batch < 1:
        raise ValueError(f"extract_features: batch must be >= 1, got {batch}")
    if with_pooled and not isinstance(model, TwoStreamNet):
        raise ValueError(f"extract_features: with_pooled needs a TwoStreamNet, got {type(model).__name__}")
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    rank, world = rank_world()
    cuda = device.type == "cuda"
    n = images.shape[0]
    idx = torch.arange(rank, n, world)
    was = model.training
    model.eval()
    feats, pooled = [], []
    starts = range(0, idx.numel(), batch)
    try:
        for s in progress_bar(starts, desc, progress, total=len(starts)):
            sel = idx[s : s + batch]
            x = normalize(to_float(images[sel.to(images.device)].to(device, non_blocking=True)))
            if cuda and channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            m = is_ir[sel.to(is_ir.device)].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp):
                f, p = _forward(model, x, m, output)
                f = F.normalize(f.float(), dim=1)
                if with_pooled:
                    pooled.append(p.float())
                if flip:
                    f2 = _forward(model, torch.flip(x, dims=[3]), m, output)[0].float()
                    f = (f + F.normalize(f2, dim=1)) / 2
            feats.append(f)
    finally:
        model.train(was)

    def gathered(parts: list[Tensor]) -> Tensor:
        dim = parts[0].shape[1] if parts else getattr(model, "feat_dim", 0)
        out = all_gather_rows(torch.cat(parts) if parts else torch.zeros(0, dim, device=device))
        if world > 1:  # rank-strided shares back to dataset order
            order = torch.cat([torch.arange(r, n, world) for r in range(world)])
            ordered = torch.empty_like(out)
            ordered[order.to(out.device)] = out
            out = ordered
        return out

    out = gathered(feats)
    out = F.normalize(out, dim=1) if renorm else out
    return (out, gathered(pooled)) if with_pooled else out
