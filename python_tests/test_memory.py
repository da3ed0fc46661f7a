"""Cluster / instance memories, TSMem and cross-modality aggregation."""

import pytest
import torch
import torch.nn.functional as F

import uvireid_ext.reference as R
from uvireid_ext.memory import (
    ClusterMemory,
    InstanceMemory,
    TSMem,
    cross_modality_aggregate,
    singleton_labels,
)


def test_tsmem_schedule():
    s = TSMem()
    assert [s.momentum(e) for e in (0, 49, 50, 99)] == [0.0, 0.0, 0.1, 0.1]
    assert s.stage(10) == "replace" and s.stage(60) == "momentum"
    assert TSMem(switch_epoch=5, momentum_after=0.2).momentum(5) == 0.2


def test_cluster_memory_init_loss_update():
    feats = torch.randn(30, 8)
    labels = torch.randint(-1, 4, (30,))
    labels[:4] = torch.arange(4)
    mem = ClusterMemory.from_features(feats, labels)
    expected = torch.stack([F.normalize(feats[labels == c].mean(0), dim=0) for c in range(4)])
    torch.testing.assert_close(mem.features, expected)
    x, y = torch.randn(6, 8, requires_grad=True), torch.tensor([0, 1, 1, 2, 3, 0])
    loss = mem(x, y)
    manual = F.cross_entropy(F.normalize(x, dim=1) @ expected.t() / 0.05, y)
    torch.testing.assert_close(loss, manual)
    loss.backward()  # memory is not touched by autograd
    torch.testing.assert_close(mem.features, expected)
    mem.update(x, y, 0.2)
    ref = expected.clone()
    R.memory_update_(ref, F.normalize(x.detach(), dim=1), y, 0.2)
    torch.testing.assert_close(mem.features, ref)


def test_singleton_labels_and_instance_memory_alignment():
    labels, n = singleton_labels(torch.tensor([1, -1, 0, -1, 1]))
    assert labels.tolist() == [1, 2, 0, 3, 1] and n == 4
    assert singleton_labels(torch.tensor([-1, -1]))[0].tolist() == [0, 1]
    feats = torch.randn(5, 6)
    mem = InstanceMemory(feats, torch.tensor([1, -1, 0, -1, 1]))
    idx = torch.tensor([4, 1])  # dataset indices, outlier included
    x = torch.randn(2, 6, requires_grad=True)
    loss = mem(x, idx)
    sims = F.normalize(x, dim=1) @ F.normalize(feats, dim=1).t() / 0.05
    p0 = sims[0].exp()[[0, 4]].sum() / sims[0].exp().sum()  # label 1 = slots 0 and 4
    p1 = sims[1].exp()[1] / sims[1].exp().sum()  # outlier: its own slot only
    torch.testing.assert_close(loss, -(torch.log(p0 + 1e-6) + torch.log(p1 + 1e-6)) / 2)
    mem.update(x, idx)  # momentum 0: replacement of exactly those slots
    torch.testing.assert_close(mem.slots[idx], F.normalize(x.detach(), dim=1))
    torch.testing.assert_close(mem.slots[[0, 2, 3]], F.normalize(feats[[0, 2, 3]], dim=1))
    with pytest.raises(ValueError, match="InstanceMemory: expected pseudo_labels of shape"):
        mem.set_labels(torch.zeros(4, dtype=torch.long))


def _adca_full_sort(fv, lv, fr, lr, mv, mr, thr=0.5, own=0.1):
    """ADCA as described: full argsort of the cosine matrix, counts, greedy one-to-one."""
    sim = F.normalize(fv, dim=1) @ F.normalize(fr, dim=1).t()
    order = torch.argsort(sim.flatten(), descending=True)
    counts: dict = {}
    for f in order.tolist():
        i, j = divmod(f, fr.shape[0])
        if sim[i, j] < thr:
            break
        if lv[i] < 0 or lr[j] < 0:
            continue
        key = (int(lv[i]), int(lr[j]))
        counts[key] = counts.get(key, 0) + 1
    pairs = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    used_v, used_r, out = set(), set(), []
    mv, mr = mv.clone(), mr.clone()
    old_v, old_r = mv.clone(), mr.clone()
    for (a, b), c in pairs:
        if a in used_v or b in used_r:
            continue
        used_v.add(a)
        used_r.add(b)
        out.append((a, b, c))
        mv[a] = own * old_v[a] + (1 - own) * old_r[b]
        mr[b] = own * old_r[b] + (1 - own) * old_v[a]
    return out, mv, mr


@pytest.mark.parametrize("k", [None, 10_000])
def test_cross_modality_aggregate_matches_full_sort(k):
    centers = F.normalize(torch.randn(5, 16), dim=1)
    lv, lr = torch.randint(0, 5, (60,)), torch.randint(0, 5, (50,))
    fv = centers[lv] + 0.3 * torch.randn(60, 16)
    fr = centers[lr] + 0.3 * torch.randn(50, 16)
    lv[::7] = -1
    lr[::9] = -1
    mv, mr = F.normalize(torch.randn(5, 16), dim=1), F.normalize(torch.randn(6, 16), dim=1)
    exp_matches, exp_v, exp_r = _adca_full_sort(fv, lv, fr, lr, mv, mr)
    got_v, got_r = mv.clone(), mr.clone()
    matches = cross_modality_aggregate(fv, lv, fr, lr, got_v, got_r, k=k, block=16)
    assert matches == exp_matches and len(matches) >= 3
    torch.testing.assert_close(got_v, exp_v)
    torch.testing.assert_close(got_r, exp_r)
    # ADCA's code leaves infrared rows as they are.
    keep_r = mr.clone()
    cross_modality_aggregate(fv, lv, fr, lr, mv.clone(), keep_r, mix_infrared=False)
    torch.testing.assert_close(keep_r, mr)


def test_cross_modality_aggregate_topk_caps_pairs():
    fv = torch.tensor([[1.0, 0.0]])
    fr = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.1]])
    lv, lr = torch.tensor([0]), torch.tensor([0, 1, 1])
    matches = cross_modality_aggregate(fv, lv, fr, lr, torch.randn(1, 2), torch.randn(2, 2), k=1)
    assert matches == [(0, 0, 1)]
    matches = cross_modality_aggregate(fv, lv, fr, lr, torch.randn(1, 2), torch.randn(2, 2))
    assert matches == [(0, 1, 2)]
