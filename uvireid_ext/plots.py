"""Line plots as PNG with Pillow only (no plotting dependency): labelled axes, a grid, one line and one
legend entry per series, several panels side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

__all__ = ["Panel", "save_panels"]

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 520, 380, 64, 16, 34, 52


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)  # name → (x, y)
    ylim: tuple[float, float] | None = None  # default: from the data


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    if integer:  # whole-number data (ranks, epochs): no ticks between them
        step = max(1.0, float(math.ceil(step)))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


def _draw_panel(d: ImageDraw.ImageDraw, x0: int, panel: Panel, names: list[str]) -> None:
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    left, top = x0 + _LEFT, _TOP
    xs = [x for xv, _ in panel.series.values() for x in xv]
    ys = [y for _, yv in panel.series.values() for y in yv if math.isfinite(y)]
    xlo, xhi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    ylo, yhi = panel.ylim or ((min(ys), max(ys)) if ys else (0.0, 1.0))
    if yhi <= ylo:
        yhi = ylo + 1.0
    if xhi <= xlo:
        xhi = xlo + 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + (x - xlo) / (xhi - xlo) * pw, top + (1 - (y - ylo) / (yhi - ylo)) * ph

    for t in _ticks(ylo, yhi):
        _, y = xy(xlo, t)
        d.line([left, y, left + pw, y], fill=(228, 228, 228))
        d.text((left - 8 - 6 * len(_label(t)), y - 6), _label(t), fill="black")
    for t in _ticks(xlo, xhi, 8, integer=all(float(x).is_integer() for x in xs)):
        x, _ = xy(t, ylo)
        d.line([x, top, x, top + ph], fill=(238, 238, 238))
        d.text((x - 3 * len(_label(t)), top + ph + 6), _label(t), fill="black")
    d.rectangle([left, top, left + pw, top + ph], outline="black")
    d.text((left + pw // 2 - 3 * len(panel.xlabel), top + ph + 26), panel.xlabel, fill="black")
    d.text((x0 + 4, top - 16), panel.ylabel, fill="black")
    d.text((left + pw // 2 - 3 * len(panel.title), 4), panel.title, fill="black")
    for name, (xv, yv) in panel.series.items():
        colour = COLOURS[names.index(name) % len(COLOURS)]
        pts = [xy(x, y) for x, y in zip(xv, yv, strict=True) if math.isfinite(y)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for x, y in pts:
            d.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)


def save_panels(panels: Sequence[Panel], path: str, order: Sequence[str] | None = None) -> None:
    """Panels side by side with one shared legend below them; series keep one colour across panels,
    and across files when they share ``order`` (the colour of a series is its place in it)."""
    names: list[str] = list(order or [])
    for p in panels:
        names += [n for n in p.series if n not in names]
    per_row = max(1, (len(panels) * _W) // 150)
    legend_rows = math.ceil(sum(any(n in p.series for p in panels) for n in names) / per_row) if names else 0
    im = Image.new("RGB", (len(panels) * _W, _H + 8 + 18 * legend_rows), "white")
    d = ImageDraw.Draw(im)
    for i, p in enumerate(panels):
        _draw_panel(d, i * _W, p, names)
    shown = [n for n in names if any(n in p.series for p in panels)]
    for i, name in enumerate(shown):
        x, y = 20 + (i % per_row) * 150, _H + 4 + 18 * (i // per_row)
        colour = COLOURS[names.index(name) % len(COLOURS)]
        d.line([x, y + 6, x + 22, y + 6], fill=colour, width=3)
        d.text((x + 28, y), name, fill="black")
    im.save(path)
