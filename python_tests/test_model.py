"""Two-stream model, weight loading, batched augmentations and the P×K sampler."""

import numpy as np
import pytest
import torch

from uvireid_ext.data import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from uvireid_ext.data import transforms as T
from uvireid_ext.data.samplers import IdentitySampler, paired_batch
from uvireid_ext.modality import Modality, StemFlag
from uvireid_ext.model import NonLocal, TwoStreamNet, build_model, gem, load_imagenet


@pytest.fixture(scope="module")
def small() -> TwoStreamNet:
    torch.manual_seed(0)
    return TwoStreamNet("small")


def test_shapes_and_modes(small: TwoStreamNet) -> None:
    x = torch.randn(4, 3, 32, 16)
    small.train()
    pooled, bn = small(x, StemFlag.VISIBLE)
    assert pooled.shape == bn.shape == (4, small.feat_dim) == (4, 512)
    small.eval()
    assert small(x, StemFlag.INFRARED).shape == (4, 512)
    torch.testing.assert_close(small(x, 2), small(x, StemFlag.INFRARED), rtol=0, atol=0)
    # 0/1 stored-modality values (Modality, bool) would pick the wrong stem: refused, like any other value
    for bad in (3, 0, True, Modality.INFRARED, "ir"):
        with pytest.raises(ValueError, match=r"model: flag must be a StemFlag or 1 \(visible\) / 2 \(infrared\)"):
            small(x, bad)


def test_stems_are_separate_and_mixed_batch_routes_each_image() -> None:
    small = TwoStreamNet("small").eval()
    with torch.no_grad():  # the stems start equal: make them differ, as training does
        small.infrared.conv1.weight.mul_(-1.0)
    x = torch.randn(6, 3, 32, 16)
    v, r = small(x, StemFlag.VISIBLE), small(x, StemFlag.INFRARED)
    assert not torch.allclose(v, r)
    flags = torch.tensor([0, 1, 1, 0, 1, 0], dtype=torch.bool)
    mixed = small(x, flags)
    expect = torch.where(flags[:, None], r, v)
    torch.testing.assert_close(mixed, expect, rtol=1e-5, atol=1e-5)


def test_last_stride_one_gem_and_frozen_neck_bias(small: TwoStreamNet) -> None:
    small.eval()
    x = torch.randn(2, 3, 64, 32)
    y = small.visible(x)
    y3 = small.layer3(small.layer2(small.layer1(y)))
    assert small.layer4(y3).shape[2:] == y3.shape[2:]  # last stride 1
    f = torch.rand(2, 5, 3, 4)
    torch.testing.assert_close(gem(f), (f.pow(3).mean((2, 3)) + 1e-12).pow(1 / 3))
    assert not small.neck.bias.requires_grad and bool((small.neck.bias == 0).all())
    m = TwoStreamNet("small")
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    m.train()
    m(torch.randn(4, 3, 32, 16), 1)[1].pow(2).sum().backward()
    opt.step()
    assert bool((m.neck.bias == 0).all())


def test_non_local_starts_as_identity() -> None:
    block = NonLocal(8)
    x = torch.randn(2, 8, 4, 3)
    torch.testing.assert_close(block(x), x)
    m = TwoStreamNet("small", non_local=True)
    assert len(m.non_local) == 2  # one block per stage in layer2 and layer3 of the small net
    m.eval()
    assert m(torch.randn(2, 3, 32, 16), 1).shape == (2, 512)


def _torchvision_format(model: TwoStreamNet) -> dict[str, torch.Tensor]:
    """A state dict keyed like torchvision's ResNet (conv1/bn1/layerN/fc), random values."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("visible."):
            out[k[len("visible."):]] = torch.randn_like(v.float()).to(v.dtype)
        elif k.startswith("layer"):
            out[k] = torch.randn_like(v.float()).to(v.dtype)
    out["fc.weight"] = torch.randn(1000, model.feat_dim)
    return out


def test_load_imagenet_into_both_stems_and_shared_layers(tmp_path, small: TwoStreamNet) -> None:
    state = _torchvision_format(small)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    m = build_model("small", str(path))
    torch.testing.assert_close(m.visible.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(m.infrared.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(m.infrared.bn1.running_var, state["bn1.running_var"])
    torch.testing.assert_close(m.layer3[0].conv2.weight, state["layer3.0.conv2.weight"])


def test_weight_file_errors(tmp_path, small: TwoStreamNet) -> None:
    with pytest.raises(FileNotFoundError, match="weight file not found: .*nope.pth"):
        build_model("small", str(tmp_path / "nope.pth"))
    wrong = {k: torch.zeros([2 * s for s in v.shape]) for k, v in _torchvision_format(small).items()}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not match arch 'small'.*conv1.weight"):
        load_imagenet(TwoStreamNet("small"), str(tmp_path / "wrong.pth"))
    partial = {k: v for k, v in _torchvision_format(small).items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not a torchvision small state dict: key 'layer4"):
        load_imagenet(TwoStreamNet("small"), str(tmp_path / "partial.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weight file .*junk.pth"):
        load_imagenet(TwoStreamNet("small"), str(tmp_path / "junk.pth"))
    with pytest.raises(ValueError, match="unknown arch"):
        TwoStreamNet("resnet9000")


def test_resnet50_layout() -> None:
    m = TwoStreamNet("resnet50")
    assert m.feat_dim == 2048
    shared = sum(p.numel() for n, p in m.named_parameters() if n.startswith("layer"))
    assert shared == 25_557_032 - 2_049_000 - 9_408 - 128  # torchvision ResNet-50 minus fc, conv1, bn1
    assert m.visible.conv1.weight.shape == (64, 3, 7, 7)


# --- transforms -------------------------------------------------------------------------------------


def _images(b: int = 5, h: int = 12, w: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (b, h, w, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_normalise_matches_the_test_transform() -> None:
    img = _images(1)
    torch.testing.assert_close(T.normalize(T.to_float(img))[0], to_tensor(img[0].numpy()))
    assert IMAGENET_MEAN[0] == 0.485 and IMAGENET_STD[2] == 0.225


def test_crop_without_pad_is_identity_or_mirror() -> None:
    x = T.to_float(_images())
    out = T.pad_crop_flip(x, 0, torch.Generator().manual_seed(0))
    for i in range(x.shape[0]):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))


def test_pad_crop_offsets_stay_inside_the_padded_image() -> None:
    x = torch.ones(64, 3, 8, 4)
    out = T.pad_crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    zeros = (out == 0).float().mean()
    assert 0 < zeros < 0.6  # some crops reach into the zero padding, none is all padding


def test_channel_ops_and_erasing() -> None:
    g = torch.Generator().manual_seed(0)
    x = T.to_float(_images(8))
    ex = T.channel_exchange(x, g)
    assert torch.equal(ex[:, 0], ex[:, 1]) and torch.equal(ex[:, 1], ex[:, 2])
    gray = T.channel_adaptive_gray(x, g, p=1.0)
    assert torch.equal(gray[:, 0], gray[:, 2])
    assert torch.equal(T.channel_adaptive_gray(x, g, p=0.0), x)
    er = T.random_erasing(torch.zeros(16, 3, 24, 12), g, p=1.0)
    changed = (er != 0).any(1)
    assert bool(changed.flatten(1).any(1).all())  # every image erased somewhere
    assert torch.allclose(er[:, 0][changed], torch.tensor(0.4914))


def test_augment_is_reproducible_from_the_generator() -> None:
    imgs = _images(6, 32, 16)
    a = T.augment(imgs, torch.Generator().manual_seed(3), exchange=True)
    b = T.augment(imgs, torch.Generator().manual_seed(3), exchange=True)
    c = T.augment(imgs, torch.Generator().manual_seed(4), exchange=True)
    assert a.shape == (6, 3, 32, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="expected images"):
        T.augment(imgs.permute(0, 3, 1, 2), torch.Generator())


# --- sampler ----------------------------------------------------------------------------------------


def test_sampler_pk_other_cameras_first() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1, 2])
    cams = np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    s = IdentitySampler(labels, cams)
    assert len(s) == 3
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = s.batch(3, 4, rng)
        assert b.shape == (12,)
        assert bool((labels[b] >= 0).all())
        for j in range(3):
            group = b[4 * j : 4 * j + 4]
            assert len(set(labels[group])) == 1
            if labels[group[0]] == 0:  # two cameras: the K-1 others come from the anchor's other camera
                assert bool((cams[group[1:]] != cams[group[0]]).all())


def test_paired_batch_same_identities() -> None:
    s1 = IdentitySampler(np.array([0, 0, 1, 1, 2, 2]), np.zeros(6, dtype=np.int64))
    s2 = IdentitySampler(np.array([1, 1, 2, 2, 3, 3]), np.zeros(6, dtype=np.int64))
    a, b = paired_batch(s1, s2, 4, 2, np.random.default_rng(0))
    la = np.array([0, 0, 1, 1, 2, 2])[a].reshape(4, 2)[:, 0]
    lb = np.array([1, 1, 2, 2, 3, 3])[b].reshape(4, 2)[:, 0]
    assert np.array_equal(la, lb) and set(la) <= {1, 2}
    with pytest.raises(ValueError, match="no labelled sample"):
        IdentitySampler(np.full(3, -1), np.zeros(3)).batch(1, 1, np.random.default_rng(0))


def test_stems_start_equal_without_weights():
    # as from ImageNet weights: a visible and an infrared copy of one image give one feature at the start
    torch.manual_seed(0)
    m = TwoStreamNet("small").eval()
    for a, b in zip(m.visible.state_dict().values(), m.infrared.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(2, 3, 64, 32)
    assert torch.equal(m(x, StemFlag.VISIBLE), m(x, StemFlag.INFRARED))
    # the stems are copies, not one module: training one leaves the other
    assert m.visible.conv1.weight.data_ptr() != m.infrared.conv1.weight.data_ptr()
