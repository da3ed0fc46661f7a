"""Batched training augmentations on the training device (``docs/methods.md``, shared parts).

Input: uint8 images [B, H, W, 3] (HWC, as stored) already at the training size. Steps, per image with its
own random draws from ``generator``: zero-pad ``pad`` pixels and crop back to H x W at a random offset,
horizontal flip with p = 0.5, optional channel exchange (second visible view) or channel-adaptive gray
(infrared), ImageNet normalisation, channel random erasing (p = 0.5, area 0.02–0.4, aspect 0.3–3.3).
Output: float32 [B, 3, H, W]. No Python loop over images.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["augment", "channel_adaptive_gray", "channel_exchange", "crop_pad", "normalize", "to_float"]

# The fill of AGW's ChannelRandomErasing (CIFAR means, written into the normalised tensor).
_ERASE_FILL = (0.4914, 0.4822, 0.4465)


def to_float(images: Tensor) -> Tensor:
    """uint8 [B, H, W, 3] → float32 [B, 3, H, W] in [0, 1]."""
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"transforms: expected images [B, H, W, 3], got {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def _rand(n: int, g: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=g, device=g.device).to(device)


def _randint(high: Tensor | int, n: int, g: torch.Generator, device: torch.device) -> Tensor:
    """Uniform integers in [0, high) per sample (high may differ per sample)."""
    return (_rand(n, g, device) * high).floor().long()


def crop_pad(height: int) -> int:
    """The random crop's padding for images ``height`` pixels high: 10 px at the standard 288, so that
    small demo images get the same relative shift (at least 1 px)."""
    return max(1, round(10 * height / 288))


def pad_crop_flip(x: Tensor, pad: int, g: torch.Generator) -> Tensor:
    b, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy, ox = _randint(2 * pad + 1, b, g, dev), _randint(2 * pad + 1, b, g, dev)
    flip = _rand(b, g, dev) < 0.5
    rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])  # [B, h]
    cols = torch.arange(w, device=dev)[None, :].expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + ox[:, None]  # flip folded into the gather
    wp = x.shape[3]
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return x.flatten(2).gather(2, flat).view(b, c, h, w)


def channel_exchange(x: Tensor, g: torch.Generator) -> Tensor:
    """ChannelExchange(gray=2): each image becomes one of its R, G, B channels copied three times."""
    idx = _randint(3, x.shape[0], g, x.device)
    return x.gather(1, idx[:, None, None, None].expand(-1, 1, *x.shape[2:])).expand_as(x).contiguous()


def channel_adaptive_gray(x: Tensor, g: torch.Generator, p: float = 0.5) -> Tensor:
    """ChannelAdapGray(p): with probability p, one channel copied to all three (idx 0–2) or the
    luminance 0.2989 R + 0.587 G + 0.114 B (idx 3); otherwise unchanged."""
    b = x.shape[0]
    apply = _rand(b, g, x.device) < p
    idx = _randint(4, b, g, x.device)
    one = x.gather(1, idx.clamp(max=2)[:, None, None, None].expand(-1, 1, *x.shape[2:]))
    gray = (x * torch.tensor([0.2989, 0.587, 0.114], device=x.device)[:, None, None]).sum(1, keepdim=True)
    out = torch.where((idx == 3)[:, None, None, None], gray, one).expand_as(x)
    return torch.where(apply[:, None, None, None], out, x)


def random_erasing(
    x: Tensor, g: torch.Generator, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4), ratio: float = 0.3
) -> Tensor:
    """ChannelRandomErasing: with probability p a rectangle of random area and aspect is filled with
    constants. Draws that do not fit (AGW retries up to 100 times) are redrawn here 10 times at once;
    an image whose 10 draws all fail is left unerased."""
    b, _, h, w = x.shape
    dev = x.device
    tries = 10
    s = (area[0] + _rand(b * tries, g, dev) * (area[1] - area[0])) * h * w
    log_r = math.log(ratio) + _rand(b * tries, g, dev) * (math.log(1 / ratio) - math.log(ratio))
    r = torch.exp(log_r)
    eh = torch.sqrt(s * r).round().long().view(b, tries)
    ew = torch.sqrt(s / r).round().long().view(b, tries)
    fits = (eh < h) & (ew < w)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(b, dtype=torch.long, device=dev))
    eh = eh.gather(1, first[:, None]).squeeze(1)
    ew = ew.gather(1, first[:, None]).squeeze(1)
    do = (_rand(b, g, dev) < p) & fits.any(1)
    y0 = _randint((h - eh).clamp(min=1), b, g, dev)
    x0 = _randint((w - ew).clamp(min=1), b, g, dev)
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = (my[:, :, None] & mx[:, None, :] & do[:, None, None])[:, None]
    fill = torch.tensor(_ERASE_FILL, device=dev, dtype=x.dtype)[None, :, None, None]
    return torch.where(mask, fill, x)


def augment(
    images: Tensor,
    g: torch.Generator,
    *,
    pad: int = 10,
    exchange: bool = False,
    adaptive_gray: bool = False,
    erase: float = 0.5,
) -> Tensor:
    """The full training transform of one batch (see the module docstring). ``g`` lives on any device;
    its draws decide every random choice, so a batch is reproducible from the generator state."""
    x = pad_crop_flip(to_float(images), pad, g)
    if exchange:
        x = channel_exchange(x, g)
    if adaptive_gray:
        x = channel_adaptive_gray(x, g)
    x = normalize(x)
    return random_erasing(x, g, erase) if erase > 0 else x
