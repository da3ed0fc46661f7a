"""Synthetic SYSU-MM01- and RegDB-shaped data sets: procedurally drawn people, same folder layout, id
lists and file naming as the real sets, so the loaders and protocols run on them unchanged.

Each identity has a body (height, build, head), skin and hair, clothing (top and bottom colours, a top
pattern, sleeve and bottom types, shoes) and accessories (backpack, shoulder bag, hat), plus thermal
properties of its materials (clothing insulation, bag temperature). Each image draws the person from a
viewpoint (front, back, left, right) with a stride/arm phase and a position/scale jitter. Visible cameras
colour it with their own illumination (gain, colour cast), background and blur; infrared cameras render a
single-channel thermal-like image whose intensity follows skin, hair and material temperature, never the
clothing colour, so colour does not carry across modalities.

Everything is drawn as a part-label map with PIL, then coloured through per-part lookup tables in numpy.
Deterministic per seed (independent NumPy generators per identity, camera and image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Part labels of the drawn map.
BG, SKIN, HAIR, TOP, BOTTOM, SHOES, BAG, HAT, PATTERN = range(9)
N_PARTS = 9

SKIN_TONES = np.array([[241, 194, 167], [224, 172, 135], [198, 134, 99], [141, 85, 54], [92, 58, 40]])
HAIR_COLOURS = np.array([[20, 15, 10], [60, 40, 25], [120, 80, 40], [200, 170, 110], [110, 110, 110]])
VIEWS = ("front", "back", "left", "right")


def _hsv_colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.15, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255


@dataclass
class Person:
    height: float  # fraction of the frame
    build: float  # shoulder width / height
    head: float  # head radius / height
    colours: np.ndarray  # (N_PARTS, 3) RGB per part
    heat: np.ndarray  # (N_PARTS,) thermal intensity per part, 0..1
    hair_long: bool
    long_sleeves: bool
    bottom_kind: str  # trousers | shorts | skirt
    pattern: str  # solid | stripes | checker | band
    pattern_period: int
    backpack: bool
    shoulder_bag: bool
    hat: bool


def make_person(rng: np.random.Generator) -> Person:
    colours = np.zeros((N_PARTS, 3))
    colours[SKIN] = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1)
    colours[HAIR] = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    for part in (TOP, BOTTOM, SHOES, BAG, HAT, PATTERN):
        colours[part] = _hsv_colour(rng)
    # Thermal: skin is the warmest; clothing gets cooler with insulation; bags and hair are cool.
    heat = np.zeros(N_PARTS)
    heat[SKIN] = rng.uniform(0.85, 1.0)
    heat[HAIR] = rng.uniform(0.3, 0.5)
    heat[TOP] = rng.uniform(0.45, 0.8)
    # A print is another material on the cloth: it shows in thermal too, with its own contrast (what
    # carries a person's identity across modalities, besides shape, accessories and cut).
    heat[PATTERN] = heat[TOP] + rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.25)
    heat[BOTTOM] = rng.uniform(0.4, 0.75)
    heat[SHOES] = rng.uniform(0.2, 0.4)
    heat[BAG] = rng.uniform(0.1, 0.35)
    heat[HAT] = rng.uniform(0.25, 0.5)
    return Person(
        height=rng.uniform(0.78, 0.92),
        build=rng.uniform(0.22, 0.32),
        head=rng.uniform(0.065, 0.08),
        colours=np.clip(colours, 0, 255),
        heat=np.clip(heat, 0, 1),
        hair_long=bool(rng.random() < 0.35),
        long_sleeves=bool(rng.random() < 0.5),
        bottom_kind=str(rng.choice(["trousers", "trousers", "shorts", "skirt"])),
        pattern=str(rng.choice(["solid", "solid", "stripes", "checker", "band"])),
        pattern_period=int(rng.integers(3, 7)),
        backpack=bool(rng.random() < 0.35),
        shoulder_bag=bool(rng.random() < 0.25),
        hat=bool(rng.random() < 0.2),
    )


@dataclass
class Camera:
    infrared: bool
    gain: float
    cast: np.ndarray  # (3,) colour multipliers (visible)
    background: np.ndarray  # (H, W, 3) float, or (H, W) for infrared
    blur: float
    noise: float


def make_camera(rng: np.random.Generator, infrared: bool, size: tuple[int, int]) -> Camera:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    horizon = rng.uniform(0.45, 0.75) * h
    floor = (yy > horizon).astype(np.float64)
    texture = np.sin(xx / rng.uniform(3, 12) + rng.uniform(0, 6)) * np.sin(yy / rng.uniform(3, 12))
    if infrared:
        base = rng.uniform(0.05, 0.35) + 0.1 * floor + 0.04 * texture
        bg = np.clip(base + rng.normal(0, 0.02, (h, w)), 0, 1)
    else:
        wall, ground = _hsv_colour(rng) / 255, _hsv_colour(rng) / 255
        bg = wall[None, None, :] * (1 - floor[..., None]) + ground[None, None, :] * floor[..., None]
        bg = np.clip(bg * (1 + 0.15 * texture[..., None]), 0, 1)
    return Camera(
        infrared=infrared,
        gain=rng.uniform(0.6, 1.25) if not infrared else rng.uniform(0.8, 1.1),
        cast=rng.uniform(0.8, 1.2, 3),
        background=bg,
        blur=rng.uniform(0.0, 1.2),
        noise=rng.uniform(0.01, 0.04),
    )


def _rect(d: ImageDraw.ImageDraw, box: list[float], fill: int) -> None:
    """A filled rectangle from any two opposite corners (PIL wants x0 <= x1, y0 <= y1)."""
    x0, y0, x1, y1 = box
    d.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=fill)


def _draw_labels(p: Person, rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The part-label map of one pose of ``p``."""
    w, h = size
    view = VIEWS[int(rng.integers(4))]
    scale = rng.uniform(0.93, 1.05)
    ph = p.height * h * scale
    cx = w / 2 + rng.normal(0, w * 0.05)
    feet = h - 2 - rng.uniform(0, h * 0.06)
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
    # Top pattern: a second colour on part of the top's pixels.
    if p.pattern != "solid":
        yy, xx = np.mgrid[0:h, 0:w]
        k = p.pattern_period
        if p.pattern == "stripes":
            mask = (yy // k) % 2 == 0
        elif p.pattern == "checker":
            mask = ((yy // k) + (xx // k)) % 2 == 0
        else:  # a horizontal band across the chest
            mask = (yy > y_sh + (y_hip - y_sh) * 0.3) & (yy < y_sh + (y_hip - y_sh) * 0.55)
        labels[(labels == TOP) & mask] = PATTERN
    return labels, view


def render(p: Person, cam: Camera, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """One image of person ``p`` seen by ``cam`` (RGB for visible cameras, L for infrared)."""
    labels, view = _draw_labels(p, rng, size)
    fg = labels != BG
    h = size[1]
    shade = np.linspace(1.08, 0.9, h)[:, None]  # light from above
    if cam.infrared:
        heat = p.heat.copy()
        if view == "back":
            heat[SKIN] *= 0.97
        val = heat[labels] * shade * cam.gain
        img = np.where(fg, val, cam.background)
        img = img + rng.normal(0, cam.noise, img.shape)
        out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L")
    else:
        col = p.colours[labels] / 255 * shade[..., None] * cam.gain * cam.cast
        bg = cam.background * cam.cast * cam.gain
        img = np.where(fg[..., None], col, bg)
        img = img + rng.normal(0, cam.noise, img.shape)
        out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="RGB")
    blur = cam.blur + rng.uniform(0, 0.4)
    return out.filter(ImageFilter.GaussianBlur(blur)) if blur > 0.3 else out


def _split(n: int, fractions: tuple[float, ...]) -> list[int]:
    sizes = [max(1, round(n * f)) for f in fractions[:-1]]
    return sizes + [n - sum(sizes)]


def _write_ids(path: str, ids: list[int]) -> None:
    with open(path, "w") as f:
        f.write(",".join(str(i) for i in ids) + "\n")


def make_sysu(
    out: str, ids: int = 48, seed: int = 0, per_camera: int = 12, size: tuple[int, int] = (64, 128)
) -> dict[str, int]:
    """Write a SYSU-MM01-shaped tree to ``out``: cam1..cam6/PPPP/NNNN.jpg and exp/{train,val,test,
    available}_id.txt, ids split about 296:99:96 like the real set. Every identity appears in cam3 (IR),
    cam4, cam5 (RGB) and cam6 (IR); about 60 % of each split also in the indoor cameras cam1, cam2 (so indoor
    search has queries without a match, as in the real set). ``per_camera`` images per (identity, camera),
    at least 10 so multi-shot works. Returns counts."""
    if ids < 6:
        raise ValueError(f"make_sysu: ids must be >= 6 (train, val and test need ids), got {ids}")
    if per_camera < 10:
        raise ValueError(f"make_sysu: per_camera must be >= 10 (multi-shot samples 10), got {per_camera}")
    root = np.random.default_rng([seed, 0])
    cams = {k: make_camera(np.random.default_rng([seed, 1, k]), k in (3, 6), size) for k in range(1, 7)}
    pids = list(range(1, ids + 1))
    order = root.permutation(pids).tolist()
    n_train, n_val, _ = _split(ids, (296 / 491, 99 / 491, 96 / 491))
    split = {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
    os.makedirs(os.path.join(out, "exp"), exist_ok=True)
    for name, lst in split.items():
        _write_ids(os.path.join(out, "exp", f"{name}_id.txt"), lst)
    _write_ids(os.path.join(out, "exp", "available_id.txt"), pids)
    # About 60 % of every split is also seen indoors (cam1, cam2), spread so that any split of >= 2 ids
    # has an outdoor-only id (in the real test set 40 of 96 ids are never in cam1/cam2).
    start = {"train": 0, "val": n_train, "test": n_train + n_val}
    indoor_ids = {
        pid
        for name, s in start.items()
        for i, pid in enumerate(order[s : s + len(split[name])])
        if i % 5 in (0, 2, 4)
    }
    counts = {f"cam{k}": 0 for k in range(1, 7)}
    for pid in pids:
        prng = np.random.default_rng([seed, 2, pid])
        person = make_person(prng)
        indoor = pid in indoor_ids
        for k in (1, 2, 3, 4, 5, 6):
            if k in (1, 2) and not indoor:
                continue
            folder = os.path.join(out, f"cam{k}", f"{pid:04d}")
            os.makedirs(folder, exist_ok=True)
            n_img = per_camera + int(prng.integers(0, 4))
            for i in range(1, n_img + 1):
                img = render(person, cams[k], np.random.default_rng([seed, 3, pid, k, i]), size)
                img.save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)
            counts[f"cam{k}"] += n_img
    counts.update({f"{k}_ids": len(v) for k, v in split.items()})
    return counts


def make_regdb(
    out: str, ids: int = 40, seed: int = 0, per_modality: int = 10, size: tuple[int, int] = (64, 128)
) -> dict[str, int]:
    """Write a RegDB-shaped tree to ``out``: Visible/<id>/<g>_<view>_v_<serial>_<k>.bmp, the matching
    Thermal/<id>/..._t_... (visible/thermal pairs share the pose, as RegDB's dual camera does) and
    idx/{train,test}_{visible,thermal}_{1..10}.txt with a random half/half id split per trial; labels are
    0..n-1 in ascending id order within each list. Returns counts."""
    if ids < 2:
        raise ValueError(f"make_regdb: ids must be >= 2, got {ids}")
    cam_v = make_camera(np.random.default_rng([seed, 1, 1]), False, size)
    cam_t = make_camera(np.random.default_rng([seed, 1, 2]), True, size)
    names: dict[int, list[tuple[str, str]]] = {}
    for pid in range(1, ids + 1):
        prng = np.random.default_rng([seed, 2, pid])
        person = make_person(prng)
        gender = "male" if prng.random() < 0.5 else "female"
        os.makedirs(os.path.join(out, "Visible", str(pid)), exist_ok=True)
        os.makedirs(os.path.join(out, "Thermal", str(pid)), exist_ok=True)
        names[pid] = []
        for k in range(1, per_modality + 1):
            state = np.random.default_rng([seed, 3, pid, k])
            pose_seed = int(state.integers(2**32))
            view = "front" if k <= per_modality // 2 else "back"
            serial = pid * 100 + k
            v_rel = f"Visible/{pid}/{gender}_{view}_v_{serial:05d}_{k}.bmp"
            t_rel = f"Thermal/{pid}/{gender}_{view}_t_{serial:05d}_{k}.bmp"
            render(person, cam_v, np.random.default_rng(pose_seed), size).save(os.path.join(out, v_rel))
            render(person, cam_t, np.random.default_rng(pose_seed), size).save(os.path.join(out, t_rel))
            names[pid].append((v_rel, t_rel))
    os.makedirs(os.path.join(out, "idx"), exist_ok=True)
    n_train = ids // 2
    for trial in range(1, 11):
        perm = np.random.default_rng([seed, 4, trial]).permutation(np.arange(1, ids + 1)).tolist()
        for split, members in (("train", sorted(perm[:n_train])), ("test", sorted(perm[n_train:]))):
            for m, modality in ((0, "visible"), (1, "thermal")):
                with open(os.path.join(out, "idx", f"{split}_{modality}_{trial}.txt"), "w") as f:
                    for label, pid in enumerate(members):
                        for pair in names[pid]:
                            f.write(f"{pair[m]} {label}\n")
    return {"ids": ids, "visible": ids * per_modality, "thermal": ids * per_modality, "train_ids": n_train}
