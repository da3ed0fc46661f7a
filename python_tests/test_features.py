"""features.extract_features: the one extraction of in-memory uint8 sets, for TwoStreamNet and for any
model with the standard ``model(x, flag)`` interface."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uvireid_ext.data.transforms import normalize, to_float
from uvireid_ext.features import extract_features
from uvireid_ext.modality import StemFlag
from uvireid_ext.model import TwoStreamNet


class TwoOutputs(torch.nn.Module):
    """(pool, bn)-style outputs; the flag shifts the feature so the stem choice is observable. Records the
    flags it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3 * 4 * 2, 5)
        self.bn = torch.nn.BatchNorm1d(5)
        self.flags: list[object] = []

    def forward(self, x: torch.Tensor, flag: StemFlag) -> tuple[torch.Tensor, torch.Tensor]:
        self.flags.append(flag)
        f = self.lin(x.flatten(1)) + 3.0 * int(flag)
        return f, self.bn(f)


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 2, 3), generator=g, dtype=torch.uint8)


def reference(model: torch.nn.Module, imgs: torch.Tensor, flag: StemFlag, output: int, flip: bool) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        x = normalize(to_float(imgs))
        f = F.normalize(model(x, flag)[output], dim=1)
        if flip:
            f = (f + F.normalize(model(torch.flip(x, dims=[3]), flag)[output], dim=1)) / 2
    return f


@pytest.mark.parametrize("flip", [False, True])
def test_standard_interface_model(flip: bool) -> None:
    torch.manual_seed(0)
    model = TwoOutputs().train()
    x = images(10)
    ir = torch.zeros(10, dtype=torch.bool)
    f = extract_features(model, x, ir, batch=3, flip=flip, output=1)
    assert model.training  # mode restored
    assert f.shape == (10, 5) and f.dtype == torch.float32
    assert all(type(flag) is StemFlag and flag == StemFlag.VISIBLE for flag in model.flags)
    torch.testing.assert_close(f, reference(model, x, StemFlag.VISIBLE, 1, flip))
    # renorm: unit rows after the flip average
    fr = extract_features(model, x, ir, flip=flip, output=1, renorm=True)
    torch.testing.assert_close(fr, F.normalize(reference(model, x, StemFlag.VISIBLE, 1, flip), dim=1))
    pooled = extract_features(model, x, ~ir, flip=False, output=0)
    torch.testing.assert_close(pooled, reference(model, x, StemFlag.INFRARED, 0, False))


def test_mixed_batch_routes_each_image_to_its_flag() -> None:
    torch.manual_seed(0)
    model = TwoOutputs()
    x = images(7, seed=1)
    ir = torch.tensor([0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    mixed = extract_features(model, x, ir, flip=True, output=1)
    vis = extract_features(model, x, torch.zeros(7, dtype=torch.bool), flip=True, output=1)
    inf = extract_features(model, x, torch.ones(7, dtype=torch.bool), flip=True, output=1)
    torch.testing.assert_close(mixed, torch.where(ir[:, None], inf, vis))


def test_two_stream_net_outputs_and_pooled() -> None:
    torch.manual_seed(0)
    net = TwoStreamNet("small")
    x = torch.randint(0, 256, (5, 32, 16, 3), dtype=torch.uint8)
    ir = torch.tensor([0, 1, 0, 1, 1], dtype=torch.bool)
    bn, pooled = extract_features(net, x, ir, flip=False, with_pooled=True)
    net.eval()
    with torch.no_grad():
        p_ref, bn_ref = net.forward_mixed(normalize(to_float(x)), ir)
    torch.testing.assert_close(bn, F.normalize(bn_ref, dim=1))
    torch.testing.assert_close(pooled, p_ref)
    torch.testing.assert_close(extract_features(net, x, ir, flip=False, output=0), F.normalize(p_ref, dim=1))


def test_bad_arguments_are_named() -> None:
    model = TwoOutputs()
    x, ir = images(4), torch.zeros(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="extract_features: the model returned 2 outputs; pass output"):
        extract_features(model, x, ir)
    with pytest.raises(ValueError, match="extract_features: with_pooled needs a TwoStreamNet, got TwoOutputs"):
        extract_features(model, x, ir, output=1, with_pooled=True)
    with pytest.raises(ValueError, match="extract_features: batch must be >= 1, got 0"):
        extract_features(model, x, ir, output=1, batch=0)

    class Single(torch.nn.Module):
        def forward(self, x: torch.Tensor, flag: StemFlag) -> torch.Tensor:
            return x.flatten(1)

    with pytest.raises(ValueError, match="extract_features: output=1 but the model returned a single tensor"):
        extract_features(Single(), x, ir, output=1)
    assert extract_features(Single(), x, ir, flip=False).shape == (4, 24)  # no parameters: CPU
