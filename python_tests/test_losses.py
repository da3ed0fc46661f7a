"""SCA intra/inter, batch-hard triplet, confidence-weighted CE, instance NCE edge cases."""

import pytest
import torch
import torch.nn.functional as F

import uvireid_ext.reference as R
from uvireid_ext.losses import (
    batch_hard_triplet,
    mmd_alignment,
    sca_inter,
    sca_intra,
    weighted_cross_entropy,
)


def test_sca_intra_l1_and_l2sq():
    f = torch.randn(6, 5, requires_grad=True)
    protos = torch.randn(3, 5, requires_grad=True)
    y, w = torch.tensor([0, 1, 2, 0, 1, 2]), torch.rand(6)
    l1 = sca_intra(f, protos, y, w, "l1")
    manual = sum(w[i] * F.l1_loss(f[i], protos[y[i]]) for i in range(6)) / 6
    torch.testing.assert_close(l1, manual)
    l2 = sca_intra(f, protos, y, w, "l2sq")
    torch.testing.assert_close(l2, (w * (f - protos[y]).pow(2).sum(1)).sum() / 6)
    (l1 + l2).backward()
    assert protos.grad is None  # prototypes are detached
    with pytest.raises(ValueError, match="sca_intra: unknown distance 'cos'"):
        sca_intra(f, protos, y, w, "cos")


def test_mmd_alignment_is_mean_over_shared_identities():
    a, b = torch.randn(12, 7, requires_grad=True), torch.randn(9, 7, requires_grad=True)
    ya = torch.tensor([3, 3, 3, 8, 8, 8, 8, 5, 5, 5, 3, 8])  # identity 5 has no b rows
    yb = torch.tensor([3, 3, 8, 8, 8, 9, 9, 3, 8])  # identity 9 has no a rows
    loss = mmd_alignment(a, b, ya, yb)
    manual = sum(R.mmd2_single(a[ya == c], b[yb == c].detach())[0] for c in (3, 8)) / 2
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert b.grad is None and torch.isfinite(a.grad).all()
    none = mmd_alignment(a, b, torch.zeros(12, dtype=torch.long), torch.ones(9, dtype=torch.long))
    assert float(none) == 0.0


def test_sca_inter_four_terms():
    v1, v2, r = torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 4)
    yv = yr = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    expected = 0.0
    for src, tgt in ((v1, r), (v2, r), (r, v1), (r, v2)):
        expected = expected + sum(R.mmd2_single(src[yv == c], tgt[yr == c])[0] for c in (0, 1)) / 2
    torch.testing.assert_close(sca_inter(v1, v2, r, yv, yr), expected)


def test_batch_hard_triplet_brute_force():
    f = torch.randn(12, 6, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    loss = batch_hard_triplet(f, y, 0.2)
    d = torch.cdist(f, f)
    terms = []
    for i in range(12):
        ap = max(d[i, j] for j in range(12) if y[j] == y[i])
        an = min(d[i, j] for j in range(12) if y[j] != y[i])
        terms.append(torch.relu(ap - an + 0.2))
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    loss.backward()
    assert torch.isfinite(f.grad).all()
    single = batch_hard_triplet(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))
    assert float(single) == 0.0


def test_weighted_cross_entropy():
    logits, y, p = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]), torch.rand(5)
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(weighted_cross_entropy(logits, y, p), (p * ce).mean())
    torch.testing.assert_close(weighted_cross_entropy(logits, y, torch.ones(5)), ce.mean())
