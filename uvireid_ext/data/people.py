"""The synthetic sets' people and cameras: identities, camera models and the rendering of one image
(the set layouts and files are ``uvireid_ext.data.synthetic``'s).

The generative model (``docs/synthetic.md`` gives the reason for each choice):

* **Identity** — what survives the change of modality: body layout (height, build, head, hair length),
  the cut of the clothes (sleeves, trousers / shorts / skirt), a texture on the top (solid, stripes,
  checker, band, at the identity's period), carried objects (backpack, shoulder bag, hat), and for every
  part a dye colour *and* a material. Pattern colours differ from the top's in lightness, so a print shows
  in both modalities.
* **Visible cameras** (SYSU cam1, 2, 4, 5) render the dye colours under the camera's illumination (gain,
  colour cast), over its own background, with its blur and noise.
* **Near-infrared cameras** (SYSU cam3, 6) lose hue: a part's intensity is one fixed nonlinear response of
  a mix of the dye's lightness and the material's near-infrared reflectance, times the camera's active
  illumination gain. The response is the same everywhere, so the *relative* brightness of parts carries
  across modalities, but not their colour, and materials add what lightness alone does not predict.
* **Thermal camera** (RegDB) renders temperature instead: skin warm, clothing by insulation, never colour.
* **Cameras** each have a viewpoint mix (a corridor camera sees mostly fronts and backs), a distance
  (scale and vertical placement), illumination, background, blur and noise.

Everything is drawn as a part-label map with PIL, then coloured through per-part lookup tables in numpy.
Deterministic given the generators passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CLOTHING",
    "MATERIALS",
    "N_PARTS",
    "PATTERN",
    "TOP",
    "Camera",
    "Person",
    "ir_response",
    "lightness",
    "make_camera",
    "make_person",
    "part_intensity",
    "render",
]

# Part labels of the drawn map.
BG, SKIN, HAIR, TOP, BOTTOM, SHOES, BAG, HAT, PATTERN = range(9)
N_PARTS = 9
CLOTHING = (TOP, BOTTOM, SHOES, BAG, HAT, PATTERN)

SKIN_TONES = np.array([[241, 194, 167], [224, 172, 135], [198, 134, 99], [141, 85, 54], [92, 58, 40]])
HAIR_COLOURS = np.array([[20, 15, 10], [60, 40, 25], [120, 80, 40], [200, 170, 110], [110, 110, 110]])
VIEWS = ("front", "back", "left", "right")
# Near-infrared reflectance of each material: what an active-IR camera sees besides the dye's lightness.
MATERIALS = {"cotton": 0.75, "wool": 0.6, "canvas": 0.55, "denim": 0.4, "synthetic": 0.25, "leather": 0.15}
_MATERIAL_NIR = np.array(list(MATERIALS.values()))
SKIN_NIR, HAIR_NIR = 0.8, 0.3
IR_LIGHTNESS_SHARE = 0.55  # the rest of a part's infrared value comes from its material
LUMA = np.array([0.299, 0.587, 0.114])


def ir_response(v: np.ndarray | float) -> np.ndarray:
    """The fixed near-infrared response: a logistic S-curve on [0, 1], scaled so 0 → 0 and 1 → 1."""
    s = 1 / (1 + np.exp(-5.0 * (np.asarray(v, dtype=np.float64) - 0.5)))
    lo, hi = 1 / (1 + np.exp(2.5)), 1 / (1 + np.exp(-2.5))
    return (s - lo) / (hi - lo)


def _hsv_colour(rng: np.random.Generator, v_range: tuple[float, float] = (0.15, 1.0)) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.2, 1.0), rng.uniform(*v_range)
    return _hsv_to_rgb(h, s, v)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255


def _with_lightness(rgb: np.ndarray, target: float) -> np.ndarray:
    """``rgb`` (0..255) scaled, then blended toward white if scaling saturates, to luma ``target``."""
    out = np.clip(rgb * target / max(float(lightness(rgb)), 1e-6), 0, 255)
    have = float(lightness(out))
    if have < target:  # luma is linear: blending toward white by t raises it by t * (1 - have)
        out = out + (target - have) / (1 - have) * (255 - out)
    return out


def lightness(rgb: np.ndarray) -> np.ndarray:
    """Luma of RGB colours in 0..255, as 0..1."""
    return np.asarray(rgb, dtype=np.float64) @ LUMA / 255


@dataclass
class Person:
    height: float  # fraction of the frame
    build: float  # shoulder width / height
    head: float  # head radius / height
    colours: np.ndarray  # (N_PARTS, 3) RGB dye per part
    nir: np.ndarray  # (N_PARTS,) near-infrared reflectance of each part's material, 0..1
    heat: np.ndarray  # (N_PARTS,) thermal intensity per part, 0..1 (RegDB's thermal camera)
    hair_long: bool
    long_sleeves: bool
    bottom_kind: str  # trousers | shorts | skirt
    pattern: str  # solid | stripes | checker | band
    pattern_period: float  # fraction of the image height
    backpack: bool
    shoulder_bag: bool
    hat: bool


def make_person(rng: np.random.Generator) -> Person:
    colours = np.zeros((N_PARTS, 3))
    colours[SKIN] = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1)
    colours[HAIR] = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    for part in CLOTHING:
        colours[part] = _hsv_colour(rng)
    # A print differs from its cloth in lightness (by 0.3 at least), so it shows in infrared too.
    top_v = float(lightness(colours[TOP]))
    darker = top_v > 0.65 or (top_v > 0.35 and rng.random() < 0.5)
    target = top_v - rng.uniform(0.3, 0.6) if darker else top_v + rng.uniform(0.3, 0.6)
    colours[PATTERN] = _with_lightness(_hsv_colour(rng), float(np.clip(target, 0.02, 0.98)))
    nir = np.zeros(N_PARTS)
    nir[SKIN], nir[HAIR] = SKIN_NIR * rng.uniform(0.9, 1.05), HAIR_NIR * rng.uniform(0.7, 1.3)
    for part in CLOTHING:
        nir[part] = _MATERIAL_NIR[rng.integers(len(_MATERIAL_NIR))]
    nir[PATTERN] = nir[TOP]  # a print is dye on the same cloth
    # Thermal: skin is the warmest; clothing gets cooler with insulation; bags and hair are cool.
    heat = np.zeros(N_PARTS)
    heat[SKIN] = rng.uniform(0.85, 1.0)
    heat[HAIR] = rng.uniform(0.3, 0.5)
    heat[TOP] = rng.uniform(0.45, 0.8)
    heat[PATTERN] = heat[TOP] + rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.25)
    heat[BOTTOM] = rng.uniform(0.4, 0.75)
    heat[SHOES] = rng.uniform(0.2, 0.4)
    heat[BAG] = rng.uniform(0.1, 0.35)
    heat[HAT] = rng.uniform(0.25, 0.5)
    return Person(
        height=rng.uniform(0.74, 0.92),
        build=rng.uniform(0.2, 0.34),
        head=rng.uniform(0.06, 0.085),
        colours=np.clip(colours, 0, 255),
        nir=np.clip(nir, 0, 1),
        heat=np.clip(heat, 0, 1),
        hair_long=bool(rng.random() < 0.35),
        long_sleeves=bool(rng.random() < 0.5),
        bottom_kind=str(rng.choice(["trousers", "trousers", "shorts", "skirt"])),
        pattern=str(rng.choice(["solid", "stripes", "checker", "band"])),
        pattern_period=float(rng.uniform(0.035, 0.07)),
        backpack=bool(rng.random() < 0.35),
        shoulder_bag=bool(rng.random() < 0.25),
        hat=bool(rng.random() < 0.2),
    )


@dataclass
class Camera:
    kind: str  # visible | nir | thermal
    gain: float
    cast: np.ndarray  # (3,) colour multipliers (visible)
    background: np.ndarray  # (H, W, 3) float, or (H, W) for infrared
    blur: float
    noise: float
    views: np.ndarray  # (4,) probabilities of front, back, left, right
    scale: float  # mean person scale (distance)
    lift: float  # mean offset of the feet above the bottom edge, fraction of the height

    @property
    def infrared(self) -> bool:
        return self.kind != "visible"


def make_camera(rng: np.random.Generator, infrared: bool | str, size: tuple[int, int]) -> Camera:
    """A camera: ``infrared`` True (or "nir") for SYSU's near-infrared cameras, "thermal" for RegDB's,
    False (or "visible") for a colour camera."""
    kind = ("nir" if infrared else "visible") if isinstance(infrared, bool) else infrared
    if kind not in ("visible", "nir", "thermal"):
        raise ValueError(f"make_camera: infrared must be a bool or one of visible, nir, thermal, got {infrared!r}")
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    horizon = rng.uniform(0.45, 0.75) * h
    floor = (yy > horizon).astype(np.float64)
    texture = np.sin(xx / rng.uniform(3, 12) + rng.uniform(0, 6)) * np.sin(yy / rng.uniform(3, 12))
    # Clutter: a few rectangles (doors, windows, furniture) of the scene.
    clutter = np.zeros((h, w))
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h * 0.8)
        cw, ch = rng.uniform(0.15, 0.5) * w, rng.uniform(0.1, 0.4) * h
        clutter[(xx >= x0) & (xx < x0 + cw) & (yy >= y0) & (yy < y0 + ch)] = rng.uniform(-1, 1)
    if kind != "visible":
        base = rng.uniform(0.05, 0.35) + 0.1 * floor + 0.04 * texture + 0.08 * clutter
        bg = np.clip(base + rng.normal(0, 0.02, (h, w)), 0, 1)
    else:
        # Muted scene colours: a real corridor or square is rarely as saturated as clothing.
        wall = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.35, 0.85)) / 255
        ground = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.7)) / 255
        bg = wall[None, None, :] * (1 - floor[..., None]) + ground[None, None, :] * floor[..., None]
        bg = np.clip(bg * (1 + 0.15 * texture[..., None] + 0.25 * clutter[..., None]), 0, 1)
    views = rng.dirichlet(np.full(4, 1.5))
    return Camera(
        kind=kind,
        gain=rng.uniform(0.7, 1.2) if kind == "visible" else rng.uniform(0.75, 1.1),
        cast=rng.uniform(0.85, 1.15, 3),
        background=bg,
        blur=rng.uniform(0.0, 1.2),
        noise=rng.uniform(0.01, 0.04) if kind == "visible" else rng.uniform(0.02, 0.05),
        views=views,
        scale=rng.uniform(0.85, 1.02),
        lift=rng.uniform(0.0, 0.06),
    )


def _rect(d: ImageDraw.ImageDraw, box: list[float], fill: int) -> None:
    """A filled rectangle from any two opposite corners (PIL wants x0 <= x1, y0 <= y1)."""
    x0, y0, x1, y1 = box
    d.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=fill)


def _draw_labels(p: Person, cam: Camera, rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The part-label map of one pose of ``p`` as ``cam`` sees it."""
    w, h = size
    view = VIEWS[int(rng.choice(4, p=cam.views))]
    scale = cam.scale * rng.uniform(0.94, 1.04)
    ph = p.height * h * scale
    cx = w / 2 + rng.normal(0, w * 0.05)
    feet = h - 2 - (cam.lift + rng.uniform(0, 0.03)) * h
    top = feet - ph
    side = view in ("left", "right")
    sw = ph * p.build / 2 * (0.6 if side else 1.0)  # half shoulder width
    r = ph * p.head
    y_sh, y_hip = top + 2.3 * r, top + 0.52 * ph
    y_knee = (y_hip + feet) / 2
    stride = rng.uniform(-1, 1) * ph * 0.08
    swing = rng.uniform(-1, 1) * ph * 0.05
    facing = 1 if view == "right" else -1

    im = Image.new("L", size, BG)
    d = ImageDraw.Draw(im)
    # Backpack behind the body (side views: sticks out behind; back view: drawn over the torso later).
    if p.backpack and side:
        bx = cx - facing * sw
        _rect(d, [bx - facing * r * 1.3, y_sh + r * 0.3, bx, y_hip - r * 0.6], fill=BAG)
    # Legs.
    leg_w = sw * 0.45
    for sgn in (-1, 1):
        hip_x = cx + sgn * sw * 0.45 * (0.4 if side else 1)
        foot_x = hip_x + sgn * stride * (1 if side else 0.3)
        d.polygon(
            [
                (hip_x - leg_w, y_hip),
                (hip_x + leg_w, y_hip),
                (foot_x + leg_w * 0.7, feet - r * 0.4),
                (foot_x - leg_w * 0.7, feet - r * 0.4),
            ],
            fill=BOTTOM,
        )
        if p.bottom_kind == "shorts":
            d.polygon(
                [
                    ((hip_x + foot_x) / 2 - leg_w * 0.8, y_knee),
                    ((hip_x + foot_x) / 2 + leg_w * 0.8, y_knee),
                    (foot_x + leg_w * 0.7, feet - r * 0.4),
                    (foot_x - leg_w * 0.7, feet - r * 0.4),
                ],
                fill=SKIN,
            )
        d.ellipse(
            [foot_x - leg_w * 1.1, feet - r * 0.6, foot_x + leg_w * 1.1 + facing * r * 0.3 * side, feet],
            fill=SHOES,
        )
    if p.bottom_kind == "skirt":
        d.polygon(
            [
                (cx - sw * 0.8, y_hip - r * 0.3),
                (cx + sw * 0.8, y_hip - r * 0.3),
                (cx + sw * 1.15, y_knee + r * 0.3),
                (cx - sw * 1.15, y_knee + r * 0.3),
            ],
            fill=BOTTOM,
        )
    # Torso.
    d.polygon([(cx - sw, y_sh), (cx + sw, y_sh), (cx + sw * 0.85, y_hip), (cx - sw * 0.85, y_hip)], fill=TOP)
    # Arms (upper arm in the top's colour; forearm skin unless long sleeves).
    arm_w = sw * 0.28
    for sgn in (-1, 1):
        if side and sgn == facing:
            continue  # the far arm is hidden
        sx = cx + sgn * sw * (0.3 if side else 1.0)
        ex, ey = sx + sgn * arm_w * 0.3 + swing * sgn, (y_sh + y_hip) / 2
        hx, hy = ex + swing * sgn * 0.6, y_hip + r * 0.3
        d.line([(sx, y_sh + arm_w), (ex, ey)], fill=TOP, width=max(2, int(2 * arm_w)))
        d.line([(ex, ey), (hx, hy)], fill=TOP if p.long_sleeves else SKIN, width=max(2, int(1.8 * arm_w)))
        d.ellipse([hx - arm_w, hy - arm_w, hx + arm_w, hy + arm_w], fill=SKIN)
    if p.backpack and view == "back":
        _rect(d, [cx - sw * 0.7, y_sh + r * 0.4, cx + sw * 0.7, y_hip - r * 0.4], fill=BAG)
    elif p.backpack and view == "front":
        for sgn in (-1, 1):
            d.line(
                [(cx + sgn * sw * 0.55, y_sh), (cx + sgn * sw * 0.5, y_hip - r)],
                fill=BAG,
                width=max(1, int(r / 3)),
            )
    if p.shoulder_bag:
        sgn = -facing if side else 1
        d.line(
            [(cx - sgn * sw * 0.8, y_sh), (cx + sgn * sw * 0.9, y_hip - r * 0.2)],
            fill=BAG,
            width=max(1, int(r / 4)),
        )
        _rect(
            d,
            [cx + sgn * sw * 0.75, y_hip - r * 0.6, cx + sgn * (sw * 0.75 + r * 1.4), y_hip + r * 0.8],
            fill=BAG,
        )
    # Head, hair, hat.
    hx0 = cx + (facing * r * 0.15 if side else 0)
    _rect(d, [cx - r * 0.35, y_sh - r * 0.5, cx + r * 0.35, y_sh + 1], fill=SKIN)  # neck
    long_hair = [hx0 - r * 1.05, top + r, hx0 + r * 1.05, y_sh + r * 0.8]
    if p.hair_long and view != "back":
        _rect(d, long_hair, fill=HAIR)  # behind the face: shows at its sides
    d.ellipse([hx0 - r, top, hx0 + r, top + 2.2 * r], fill=HAIR if view == "back" else SKIN)
    if view != "back":
        d.chord([hx0 - r * 1.05, top - r * 0.1, hx0 + r * 1.05, top + 1.6 * r], 180, 360, fill=HAIR)
    elif p.hair_long:
        _rect(d, long_hair, fill=HAIR)
    if p.hat:
        d.chord([hx0 - r * 1.15, top - r * 0.4, hx0 + r * 1.15, top + 1.4 * r], 180, 360, fill=HAT)
    labels = np.asarray(im, dtype=np.uint8).copy()
    # Top pattern: a second colour on part of the top's pixels; its period scales with the person.
    if p.pattern != "solid":
        yy, xx = np.mgrid[0:h, 0:w]
        k = max(2.0, p.pattern_period * ph / 0.85)
        if p.pattern == "stripes":
            mask = (np.floor((yy - top) / k) % 2) == 0
        elif p.pattern == "checker":
            mask = ((np.floor((yy - top) / k) + np.floor((xx - cx) / k)) % 2) == 0
        else:  # a horizontal band across the chest
            mask = (yy > y_sh + (y_hip - y_sh) * 0.3) & (yy < y_sh + (y_hip - y_sh) * 0.6)
        labels[(labels == TOP) & mask] = PATTERN
    return labels, view


def part_intensity(p: Person, kind: str) -> np.ndarray:
    """(N_PARTS,) infrared value of every part before the camera's gain: ``nir`` (the fixed response of
    lightness and material) or ``thermal`` (temperature)."""
    if kind == "thermal":
        return p.heat.copy()
    mix = IR_LIGHTNESS_SHARE * lightness(p.colours) + (1 - IR_LIGHTNESS_SHARE) * p.nir
    return ir_response(mix)


def render(p: Person, cam: Camera, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """One image of person ``p`` seen by ``cam`` (RGB for visible cameras, L for infrared)."""
    labels, view = _draw_labels(p, cam, rng, size)
    fg = labels != BG
    h = size[1]
    shade = np.linspace(1.08, 0.9, h)[:, None]  # light from above
    if cam.infrared:
        value = part_intensity(p, cam.kind)
        if view == "back":
            value[SKIN] *= 0.97
        val = value[labels] * shade * cam.gain
        img = np.where(fg, val, cam.background)
        img = img + rng.normal(0, cam.noise, img.shape)
        out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L")
    else:
        col = p.colours[labels] / 255 * shade[..., None] * cam.gain * cam.cast
        bg = cam.background * cam.cast * cam.gain
        img = np.where(fg[..., None], col, bg)
        img = img + rng.normal(0, cam.noise, img.shape)
        out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB")
    blur = (cam.blur + rng.uniform(0, 0.4)) * h / 128  # blur radius in proportion to the image
    return out.filter(ImageFilter.GaussianBlur(blur)) if blur > 0.3 else out
