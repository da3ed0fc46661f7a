"""The README's "Using the ops" example runs as written and finds what the README says it finds."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from uvireid_ext.metrics import ari

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(title: str) -> str:
    text = README.read_text()
    section = text[text.index(f"## {title}"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_using_the_ops_example() -> None:
    env: dict = {}
    exec(compile(_section_code("Using the ops"), "README.md", "exec"), env)  # noqa: S102 - our own README
    text = README.read_text()
    labels, pl, person = env["labels"], env["pl"], env["person"]
    assert env["d"].shape == (4800, 4800) and env["s"].layout == torch.sparse_csr
    clusters = int(labels.max()) + 1
    assert f"{clusters} clusters here" in text
    vis, ir = int(pl.visible.max()) + 1, int(pl.infrared.max()) + 1
    a_v = ari(pl.visible, person[pl.visible_index])["outliers_singletons"]
    a_r = ari(pl.infrared, person[pl.infrared_index])["outliers_singletons"]
    a_j = ari(pl.joint, person)["outliers_singletons"]
    claim = (f"come\nout at {vis} and {ir} clusters (ARI {a_v:.2f} and {a_r:.2f} against `person`), and the joint "
             f"set at {int(pl.joint.max()) + 1} (ARI {a_j:.1f})")
    assert claim.replace("\n", " ") in text.replace("\n", " "), claim
