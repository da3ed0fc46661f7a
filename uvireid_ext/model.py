"""Two-stream ResNet (AGW / ADCA / MMM backbone, ``docs/methods.md``, shared parts) in plain torch.

Separate visible and infrared stems (conv1 + bn1 + ReLU + maxpool), shared layer1–layer4 with the last
stride 1, optional non-local blocks (after layer2 blocks 2–3 and layer3 blocks 3–5, AGW's placement),
GeM pooling with fixed p = 3 and a BatchNorm1d neck whose bias is frozen at zero.

``model(x, flag)`` with flag a ``StemFlag`` (1 visible, 2 infrared), the evaluator's interface: in eval
mode it returns the BN-neck feature; in train mode ``(pooled, bn)``. A batch may hold both modalities:
``model.forward_mixed(x, is_infrared)`` routes each image through its own stem.

``resnet50`` loads ImageNet weights from a local torchvision-format state dict (``--weights PATH``):
both stems get conv1/bn1, the shared layers get layer1–4; nothing is ever downloaded. ``small`` is a
narrow ResNet (one bottleneck per stage, base width 16) for CPU runs and tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modality import StemFlag, stem_flag

__all__ = ["ARCHS", "BackboneSpec", "TwoStreamNet", "build_model", "load_imagenet"]


@dataclass(frozen=True)
class BackboneSpec:
    blocks: tuple[int, int, int, int]
    width: int  # channels of layer1's 3x3 conv; the output has width * 8 * 4 channels

    @property
    def feat_dim(self) -> int:
        return self.width * 8 * Bottleneck.expansion


ARCHS: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec((3, 4, 6, 3), 64),
    "small": BackboneSpec((1, 1, 1, 1), 16),
}
# AGW's non_layers = [0, 2, 3, 0]: the last 2 blocks of layer2 and the last 3 of layer3 get a block.
_NON_LOCAL = (0, 2, 3, 0)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class NonLocal(nn.Module):
    """Embedded-Gaussian-free non-local block as AGW uses it: dot-product affinity divided by the
    number of positions (no softmax), output BN zero-initialised so a new block starts as identity.
    ``inter`` channels: AGW upstream uses in/2 (ADCA's code ends up with 1, docs/methods.md)."""

    def __init__(self, channels: int, inter: int | None = None) -> None:
        super().__init__()
        inter = inter or max(1, channels // 2)
        self.g = nn.Conv2d(channels, inter, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.w = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.w[1].weight)
        nn.init.zeros_(self.w[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)  # [B, HW, C']
        theta = self.theta(x).flatten(2).transpose(1, 2)
        phi = self.phi(x).flatten(2)  # [B, C', HW]
        y = (theta @ phi) / (h * w) @ g  # [B, HW, C']
        return x + self.w(y.transpose(1, 2).reshape(b, -1, h, w))


class Stem(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.bn1(self.conv1(x)), inplace=True), 3, 2, 1)


def gem(x: Tensor, p: float = 3.0, eps: float = 1e-12) -> Tensor:
    """GeM with fixed p (ADCA/MMM): (mean(x^p) + eps)^(1/p) over the spatial positions; float32."""
    x = x.float()
    return (x.pow(p).flatten(2).mean(2) + eps).pow(1.0 / p)


class TwoStreamNet(nn.Module):
    def __init__(self, arch: str = "resnet50", non_local: bool = False, last_stride: int = 1) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"model: unknown arch {arch!r}; known: {sorted(ARCHS)}")
        spec = ARCHS[arch]
        self.arch = arch
        self.feat_dim = spec.feat_dim
        self.visible = Stem(spec.width)
        self.infrared = Stem(spec.width)
        inplanes = spec.width
        layers = []
        for i, (n, stride) in enumerate(zip(spec.blocks, (1, 2, 2, last_stride), strict=True)):
            planes = spec.width * 2**i
            blocks: list[nn.Module] = []
            for j in range(n):
                blocks.append(Bottleneck(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes * Bottleneck.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        # Non-local blocks after the last ``_NON_LOCAL[i]`` blocks of layer i+1 (fewer in small nets).
        self.non_local = nn.ModuleDict()
        if non_local:
            for i, count in enumerate(_NON_LOCAL):
                n = spec.blocks[i]
                for j in range(max(0, n - count), n):
                    self.non_local[f"{i}_{j}"] = NonLocal(spec.width * 2**i * Bottleneck.expansion)
        self.neck = nn.BatchNorm1d(self.feat_dim)
        nn.init.normal_(self.neck.weight, 1.0, 0.01)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)  # BN neck: frozen zero bias
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Both stems start equal, as they do from ImageNet weights (load_imagenet) in every reference code:
        # two independent random stems put the modalities in unrelated feature spaces at the start, and
        # the clustering then finds no cross-modality neighbours to learn from.
        self.infrared.load_state_dict(self.visible.state_dict())

    def _trunk(self, x: Tensor) -> Tensor:
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            for j, block in enumerate(layer):
                x = block(x)
                key = f"{i}_{j}"
                if key in self.non_local:
                    x = self.non_local[key](x)
        return x

    def forward_mixed(self, x: Tensor, is_infrared: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled, bn) for a batch mixing modalities; ``is_infrared`` [B] bool picks each stem."""
        if bool(is_infrared.all()):
            y = self.infrared(x)
        elif not bool(is_infrared.any()):
            y = self.visible(x)
        else:
            iv, ir = (~is_infrared).nonzero().flatten(), is_infrared.nonzero().flatten()
            yv, yr = self.visible(x[iv]), self.infrared(x[ir])
            # keep the stems' memory format (channels_last on CUDA) for the shared trunk
            channels_last = yv.is_contiguous(memory_format=torch.channels_last) and not yv.is_contiguous()
            y = torch.empty((x.shape[0], *yv.shape[1:]), dtype=yv.dtype, device=yv.device,
                            memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            y[iv], y[ir] = yv, yr
        pooled = gem(self._trunk(y))
        return pooled, self.neck(pooled)

    def forward(self, x: Tensor, flag: StemFlag | int | Tensor = StemFlag.VISIBLE) -> Tensor | tuple[Tensor, Tensor]:
        """The standard interface: ``flag`` a :class:`StemFlag` (or its value, 1 visible / 2 infrared) for
        the whole batch, or a [B] bool tensor (True = infrared) per image. Train mode: (pooled, bn); eval
        mode: bn."""
        if isinstance(flag, Tensor):
            is_ir = flag.to(torch.bool)
        else:
            is_ir = torch.full((x.shape[0],), stem_flag(flag) == StemFlag.INFRARED, dtype=torch.bool,
                               device=x.device)
        pooled, bn = self.forward_mixed(x, is_ir)
        return (pooled, bn) if self.training else bn


def load_imagenet(model: TwoStreamNet, path: str) -> None:
    """Copy a torchvision-format ResNet state dict (``conv1.*``, ``bn1.*``, ``layer1-4.*``; ``fc`` ignored)
    into both stems and the shared layers. Raises naming the file and the first mismatch."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model: weight file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or non-torch file
        raise ValueError(f"model: cannot read weight file {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"model: {path} does not hold a state dict (got {type(state).__name__})")
    target: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        if k.startswith(("visible.", "infrared.")):
            target[k] = v
        elif k.startswith("layer"):
            target[k] = v
    mapped = {}
    for k, v in target.items():
        src = k.split(".", 1)[1] if k.startswith(("visible.", "infrared.")) else k
        if src not in state:
            raise ValueError(
                f"model: {path} is not a torchvision {model.arch} state dict: key {src!r} missing "
                f"(it has {len(state)} keys, e.g. {list(state)[:3]})"
            )
        if tuple(state[src].shape) != tuple(v.shape):
            raise ValueError(
                f"model: {path} does not match arch {model.arch!r}: {src!r} has shape "
                f"{tuple(state[src].shape)}, expected {tuple(v.shape)}"
            )
        mapped[k] = state[src]
    missing, _ = model.load_state_dict(mapped, strict=False)
    assert all(not k.startswith(("layer", "visible.", "infrared.")) for k in missing), missing


def build_model(arch: str = "resnet50", weights: str | None = None, non_local: bool = False) -> TwoStreamNet:
    model = TwoStreamNet(arch, non_local=non_local)
    if weights:
        load_imagenet(model, weights)
    return model
