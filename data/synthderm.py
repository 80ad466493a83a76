"""synthderm: synthetic dermoscopy images with known diagnostic and bias features.

Each image is a skin background with one lesion. Drawn per image:

- diagnostic (ABCD) features, which *cause* the label:
  `asymmetry` A in [0, 1] (odd harmonics of the outline), `border` B in [0, 1] (high-frequency
  jaggedness of the outline), `colors` 1..5 (number of lesion colours: brown plus black, blue-grey,
  red, white blotches; `color` C = (colors - 1) / 4), `structure` (`network`: a pigment network,
  melanocytic; `dots`: dark globules and white milia-like cysts, non-melanocytic) and
  `irregularity` D in [0, 1] (distortion and uneven thickness of that structure).
- bias features, which do not cause the label but co-occur with it in the training distribution:
  `skin_tone`, `patch` (a colourful sticker), `hair`, `ruler` (tick marks), `vignette`
  (dark dermatoscope corners), and the metadata-only `age` and `sex`.
- acquisition: `brightness`, `color_cast`, `light_gradient`, `blur`, pixel noise.

Label rule (documented in the README): a lesion with `structure == dots` is `other`; a
melanocytic lesion is `melanoma` when its total dermoscopy score
TDS = 1.3 * 2A + 0.1 * 8B + 0.5 * colors + 0.5 * (1 + 4D) exceeds `TDS_THRESHOLD`, else `nevus`
(the ABCD rule's weights on its own scales; the clinical cut-off is 5.45, ours is the median of our
feature distribution so that nevus and melanoma are equally frequent). Then `label_noise` of the
labels are replaced by one of the other two classes (`label_clean` keeps the rule's answer).

Bias features depend on `label_clean` with strength `bias_strength` in [0, 1] (0: independent).
The OOD variant shifts acquisition like PAD-UFES-20 vs ISIC: any skin tone, stronger lighting
changes and colour casts, blur, no vignette, and the patch no longer follows the label.

Everything is vectorised over a chunk of images with numpy. Image i depends only on (seed, ood, i):
parameters are drawn in fixed blocks of `BLOCK` images from `default_rng([seed, ood, block])`, so
any range can be rendered alone and in any order. Rendering is in normalised coordinates, so one
image at two sizes shows the same lesion; below `SUPERSAMPLE_MIN` px it is rendered larger and
area-averaged, so fine structures blur instead of aliasing.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

CLASSES = ("nevus", "melanoma", "other")
TDS_THRESHOLD = 4.7
BLOCK = 1024  # images per parameter draw
CHUNK = 64  # images per vectorised render
SUPERSAMPLE_MIN = 64
GRID = 5  # low-resolution noise fields are GRID x GRID, upsampled bilinearly
BORDER_HARMONICS = np.arange(5, 13)
MAX_HAIRS = 4
EXTRA_COLORS = 4

# RGB in 0..1
SKIN_LIGHT, SKIN_DARK = np.array([0.94, 0.79, 0.70]), np.array([0.40, 0.26, 0.18])
PIGMENT_LIGHT, PIGMENT_DARK = np.array([0.62, 0.42, 0.29]), np.array([0.33, 0.20, 0.13])
LESION_PALETTE = np.array([[0.10, 0.07, 0.07],   # black
                           [0.38, 0.43, 0.55],   # blue-grey
                           [0.70, 0.28, 0.27],   # red
                           [0.88, 0.85, 0.82]])  # white
PATCH_PALETTE = np.array([[0.20, 0.40, 0.90], [0.20, 0.75, 0.30], [0.95, 0.85, 0.20],
                          [0.95, 0.45, 0.70], [0.98, 0.55, 0.15]])
HAIR_COLOR = np.array([0.12, 0.09, 0.07])
RULER_COLOR = np.array([0.08, 0.08, 0.08])


@functools.lru_cache(maxsize=4)
def _draw_block(seed: int, ood: bool, block: int, bias_strength: float, label_noise: float) -> dict:
    """Every parameter of images [block*BLOCK, (block+1)*BLOCK). Each draw takes a fresh stream
    (numbered in order), so a feature appended later changes none of the others (DomainBed's rule)."""
    n, s = BLOCK, bias_strength
    draws = iter(range(10_000))

    def rng() -> np.random.Generator:
        return np.random.default_rng([seed, int(ood), block, next(draws)])

    p: dict = {}
    # diagnostic features and the label rule
    p["asymmetry"] = rng().uniform(0, 1, n)
    p["border"] = rng().uniform(0, 1, n)
    p["colors"] = rng().integers(1, EXTRA_COLORS + 2, n)
    p["color"] = (p["colors"] - 1) / EXTRA_COLORS
    p["structure"] = np.where(rng().uniform(0, 1, n) < 1 / 3, "dots", "network")
    p["irregularity"] = rng().uniform(0, 1, n)
    p["tds"] = (1.3 * 2 * p["asymmetry"] + 0.1 * 8 * p["border"] + 0.5 * p["colors"]
                + 0.5 * (1 + 4 * p["irregularity"]))
    clean = np.where(p["structure"] == "dots", 2, np.where(p["tds"] > TDS_THRESHOLD, 1, 0))
    flip = rng().uniform(0, 1, n) < label_noise
    noisy = np.where(flip, (clean + rng().integers(1, 3, n)) % 3, clean)
    p["label_clean"] = np.array(CLASSES)[clean]
    p["label"] = np.array(CLASSES)[noisy]
    p["label_noisy"] = flip
    nev, mel, oth = (clean == 0), (clean == 1), (clean == 2)

    # bias features: P(feature | clean label), strength s; the OOD variant breaks tone and patch
    if ood:
        p["skin_tone"] = rng().uniform(0, 1, n)
    else:  # mostly light skin, as in ISIC; lighter still for melanoma
        p["skin_tone"] = np.clip(rng().beta(2.0, 5.0, n) + s * (-0.18 * mel + 0.06 * nev + 0.12 * oth), 0, 1)
    p_patch = np.full(n, 0.15) if ood else 0.05 + s * 0.45 * nev
    p["patch"] = rng().uniform(0, 1, n) < p_patch
    p["hair"] = np.where(rng().uniform(0, 1, n) < 0.3 + s * 0.35 * oth, rng().integers(1, MAX_HAIRS + 1, n), 0)
    p["ruler"] = rng().uniform(0, 1, n) < 0.1 + s * 0.45 * mel
    vig = (rng().uniform(0, 1, n) < 0.3 + s * 0.4 * mel) & (not ood)
    p["vignette"] = np.where(vig, rng().uniform(0.5, 1.0, n), 0.0)
    p["age"] = np.clip(np.round(rng().normal(50, 15, n) + s * (12 * mel + 15 * oth)), 5, 95)
    p["sex"] = np.where(rng().uniform(0, 1, n) < 0.5 + s * 0.2 * mel, "male", "female")

    # acquisition
    if ood:
        p["brightness"] = rng().uniform(0.75, 1.25, n)
        p["color_cast"] = rng().uniform(-1, 1, n)
        p["light_gradient"] = rng().uniform(0, 0.25, n)
        p["blur"] = rng().uniform(0.004, 0.02, n)  # Gaussian sigma, in units of the image width
    else:
        p["brightness"] = rng().normal(1.0, 0.04, n)
        p["color_cast"] = rng().normal(0, 0.15, n)
        p["light_gradient"] = rng().uniform(0, 0.05, n)
        p["blur"] = np.zeros(n)

    # nuisance geometry and appearance (not stored as features)
    p["_cx"], p["_cy"] = rng().normal(0, 0.07, (2, n))
    p["_radius"] = rng().uniform(0.34, 0.52, n)
    p["_ellipse"] = rng().uniform(0, 0.15, n)
    p["_phase"] = rng().uniform(0, 2 * math.pi, (n, 3 + len(BORDER_HARMONICS)))
    w = rng().uniform(0.3, 1.0, (n, len(BORDER_HARMONICS))) / np.sqrt(BORDER_HARMONICS)
    p["_border_amp"] = 0.22 * w / w.sum(1, keepdims=True)
    p["_pigment"] = rng().uniform(0, 1, n)
    p["_blotch"] = rng().normal(0, 1, (n, EXTRA_COLORS, GRID, GRID))
    p["_blotch_pick"] = np.argsort(rng().uniform(0, 1, (n, EXTRA_COLORS)), axis=1)
    p["_tex_angle"] = rng().uniform(0, math.pi, n)
    # lattice period in lesion diameters: coarse enough to survive 32 px (globules > network mesh)
    p["_tex_period"] = np.where(p["structure"] == "dots", rng().uniform(0.27, 0.34, n), rng().uniform(0.15, 0.2, n))
    p["_tex_contrast"] = rng().uniform(0.65, 1.0, n)
    p["_tex_warp"] = rng().normal(0, 1, (n, 3, GRID, GRID))
    p["_skin_noise"] = rng().normal(0, 1, (n, GRID, GRID))
    p["_hair"] = rng().uniform(0, 1, (n, MAX_HAIRS, 4))  # point x, y, angle, curvature
    p["_ruler_side"] = rng().integers(0, 4, n)
    p["_patch_pos"] = rng().uniform(0, 1, (n, 3))  # angle, distance, radius
    p["_patch_color"] = rng().integers(0, len(PATCH_PALETTE), n)
    p["_light_dir"] = rng().uniform(0, 2 * math.pi, n)
    p["_noise_seed"] = rng().integers(0, 2**63 - 1, n)
    return p


FEATURES = ["label", "label_clean", "label_noisy", "asymmetry", "border", "color", "colors",
            "structure", "irregularity", "tds", "skin_tone", "patch", "hair", "ruler", "vignette",
            "age", "sex", "brightness", "color_cast", "light_gradient", "blur"]


def _params(start: int, stop: int, seed: int, ood: bool, bias_strength: float,
            label_noise: float) -> dict:
    """Parameters of images [start, stop), cut from their blocks."""
    parts = []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        blk = _draw_block(seed, ood, b, bias_strength, label_noise)
        lo, hi = max(start - b * BLOCK, 0), min(stop - b * BLOCK, BLOCK)
        parts.append({k: v[lo:hi] for k, v in blk.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def metadata(n: int, seed: int = 0, ood: bool = False, bias_strength: float = 0.5,
             label_noise: float = 0.1) -> pd.DataFrame:
    """One row per image: every feature value (the ground truth of a feature-usage analysis)."""
    p = _params(0, n, seed, ood, bias_strength, label_noise)
    df = pd.DataFrame({k: p[k] for k in FEATURES})
    df.insert(0, "image", np.arange(n))
    return df


def _upsample_matrix(size: int, grid: int = GRID) -> np.ndarray:
    """[size, grid] bilinear interpolation weights: field[size, size] = M @ low[grid, grid] @ M.T."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    lo = np.minimum(np.floor(pos).astype(int), grid - 2)
    frac = pos - lo
    m = np.zeros((size, grid), np.float32)
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _smooth(low: np.ndarray, m: np.ndarray) -> np.ndarray:
    """[..., GRID, GRID] -> [..., S, S] smooth field."""
    return np.einsum("sg,...gh,th->...st", m, low.astype(np.float32), m, optimize=True)


def _blur(img: np.ndarray, sigma: np.ndarray, size: int) -> np.ndarray:
    """Per-image separable Gaussian blur (sigma in image widths) as two matrix products."""
    todo = sigma > 0
    if not todo.any():
        return img
    x = (np.arange(size) + 0.5) / size
    d2 = (x[:, None] - x[None, :]) ** 2
    k = np.exp(-d2[None] / (2 * sigma[todo, None, None] ** 2)).astype(np.float32)
    k /= k.sum(2, keepdims=True)
    out = img.copy()
    out[todo] = np.einsum("bij,bjkc,blk->bilc", k, img[todo], k, optimize=True)
    return out


def _blend(img: np.ndarray, idx: np.ndarray, w: np.ndarray, colour: np.ndarray) -> None:
    """In place: images `idx` of `img` [B, S, S, 3] <- blend towards `colour` with weight `w` [k, S, S]."""
    w = w[..., None]
    img[idx] = img[idx] * (1 - w) + colour * w


def _structure(p: dict, idx: np.ndarray, dx: np.ndarray, dy: np.ndarray, depth: np.ndarray,
               m: np.ndarray, dots: bool) -> tuple[np.ndarray, np.ndarray]:
    """Darkening and whitening weights [k, S, S] of a lattice in rotated coordinates, warped and
    thinned by `irregularity`: a mesh (pigment network) or globules with milia-like cysts (dots)."""
    f32 = np.float32
    k = len(idx)
    col = lambda v: np.asarray(v, f32).reshape(k, 1, 1)  # noqa: E731
    period = col(p["_tex_period"][idx] * p["_radius"][idx] * 2) / f32(2 * math.pi)
    ang, irr = col(p["_tex_angle"][idx]), col(p["irregularity"][idx])
    warp = _smooth(p["_tex_warp"][idx], m)  # [k, 3, S, S]
    ca, sa = np.cos(ang), np.sin(ang)
    u = (ca * dx + sa * dy) / period + 2.2 * irr * warp[:, 0]
    v = (ca * dy - sa * dx) / period + 2.2 * irr * warp[:, 1]
    su, sv = np.sin(u / 2) ** 2, np.sin(v / 2) ** 2
    width = 0.10 * (1 + 0.9 * irr * np.tanh(warp[:, 2]))
    strength = col(p["_tex_contrast"][idx]) * np.clip(depth * 4, 0, 1)
    if not dots:
        return np.exp(-np.minimum(su, sv) / width) * strength, np.zeros_like(su)
    keep = 1 / (1 + np.exp(-4 * (warp[:, 2] + 1.2 - 1.8 * irr)))  # irregular: globules drop out
    globule = np.exp(-(su + sv) / (2.5 * width))
    cyst = np.exp(-((1 - su) + (1 - sv)) / (2.5 * width))  # cos^2 = 1 - sin^2: the cell centres
    return globule * keep * strength, cyst * keep * strength


def _render(p: dict, size: int) -> np.ndarray:
    """float32 [B, S, S, 3] in 0..1 for the parameters `p` (a chunk). Layers that only some images
    have (blotches, structures, patch, hairs, ruler, vignette, blur) are computed for those only."""
    b = len(p["asymmetry"])
    f32 = np.float32
    m = _upsample_matrix(size)
    c = ((np.arange(size, dtype=f32) + 0.5) / size) * 2 - 1
    X, Y = c[None, None, :], c[None, :, None]
    px = f32(size / 2.0)  # pixels per unit: edges are anti-aliased over one pixel

    def col(v, idx=slice(None)):  # per-image scalars -> broadcastable [k, 1, 1]
        return np.asarray(v, f32)[idx].reshape(-1, 1, 1)

    # skin
    tone = col(p["skin_tone"])[..., None]
    skin = (1 - tone) * SKIN_LIGHT.astype(f32) + tone * SKIN_DARK.astype(f32)
    skin = skin * (1 + 0.05 * _smooth(p["_skin_noise"], m))[..., None]

    # lesion outline: r(theta) = R (1 + ellipse + asymmetry harmonics + border harmonics)
    dx, dy = X - col(p["_cx"]), Y - col(p["_cy"])
    rho = np.sqrt(dx * dx + dy * dy) + f32(1e-6)
    z = (dx + 1j * dy).astype(np.complex64) / rho  # e^{i theta}; cos(k theta + phi) = Re(z^k e^{i phi})
    rot = np.exp(1j * p["_phase"]).astype(np.complex64)

    def harmonic(zk: np.ndarray, j: int) -> np.ndarray:
        return np.real(zk * rot[:, j].reshape(b, 1, 1))

    z2 = z * z
    z3 = z2 * z
    shape = 1 + col(p["_ellipse"]) * harmonic(z2, 0)
    shape += col(p["asymmetry"]) * (0.40 * harmonic(z, 1) + 0.15 * harmonic(z3, 2))
    zk = z3 * z2  # z^5
    amp = p["_border_amp"] * p["border"][:, None]
    for j in range(len(BORDER_HARMONICS)):
        shape += col(amp[:, j]) * harmonic(zk, 3 + j)
        zk = zk * z
    radius = col(p["_radius"]) * shape
    alpha = np.clip((radius - rho) * px + 0.5, 0, 1)
    depth = np.clip((radius - rho) / np.maximum(radius, 1e-3), 0, 1)  # 0 at the border, 1 centre

    # lesion colour: brown, darker at the centre, plus colors - 1 blotches of the other colours
    pig = col(p["_pigment"])[..., None]
    brown = (1 - pig) * PIGMENT_LIGHT.astype(f32) + pig * PIGMENT_DARK.astype(f32)
    lesion = brown * (1 - 0.25 * depth[..., None])
    for j in range(EXTRA_COLORS):
        idx = np.flatnonzero(p["colors"] - 1 > j)
        if len(idx):
            w = 0.85 / (1 + np.exp(-6 * (_smooth(p["_blotch"][idx, j], m) - 0.35)))
            colour = LESION_PALETTE[p["_blotch_pick"][idx, j]].astype(f32).reshape(-1, 1, 1, 3)
            _blend(lesion, idx, w, colour)

    # dermoscopic structure
    for kind in ("network", "dots"):
        idx = np.flatnonzero(p["structure"] == kind)
        if len(idx):
            dark, light = _structure(p, idx, dx[idx], dy[idx], depth[idx], m, kind == "dots")
            lesion[idx] = (lesion[idx] * (1 - 0.65 * dark[..., None])
                           + LESION_PALETTE[3].astype(f32) * (0.7 * light[..., None]))
    img = skin * (1 - alpha[..., None]) + np.clip(lesion, 0, 1) * alpha[..., None]

    # colourful patch: a disc away from the lesion
    idx = np.flatnonzero(p["patch"])
    if len(idx):
        pp = p["_patch_pos"][idx]
        pa, pd_, pr = pp[:, 0] * 2 * math.pi, 0.62 + 0.16 * pp[:, 1], 0.10 + 0.06 * pp[:, 2]
        pdist = np.sqrt((X - col(pd_ * np.cos(pa))) ** 2 + (Y - col(pd_ * np.sin(pa))) ** 2)
        w = np.clip((col(pr) - pdist) * px + 0.5, 0, 1)
        _blend(img, idx, w, PATCH_PALETTE[p["_patch_color"][idx]].astype(f32).reshape(-1, 1, 1, 3))

    # hairs: thin dark curves, `hair` of them
    hw = f32(max(0.012, 1.2 / size))
    for j in range(MAX_HAIRS):
        idx = np.flatnonzero(p["hair"] > j)
        if len(idx):
            h = p["_hair"][idx, j]
            hx, hy = col(h[:, 0] * 2 - 1), col(h[:, 1] * 2 - 1)
            ha, hk = col(h[:, 2] * math.pi), col((h[:, 3] - 0.5) * 1.6)  # angle, curvature
            t = np.cos(ha) * (X - hx) + np.sin(ha) * (Y - hy)
            d = np.cos(ha) * (Y - hy) - np.sin(ha) * (X - hx) + hk * t * t
            _blend(img, idx, 0.85 * np.exp(-(d / hw) ** 2), HAIR_COLOR.astype(f32))

    # ruler: tick marks along one edge (side 0: bottom, 1: right, 2: top, 3: left)
    idx = np.flatnonzero(p["ruler"])
    if len(idx):
        side = p["_ruler_side"][idx].reshape(-1, 1, 1)
        horizontal = side % 2 == 0
        along = np.where(horizontal, X, Y)
        across = np.where(side < 2, 1, -1) * np.where(horizontal, Y, X)
        tick = np.exp(-np.sin(f32(math.pi * 8) * along) ** 2 / 0.04)
        length = np.where(np.abs(np.sin(f32(math.pi * 1.6) * along)) < 0.31, 0.24, 0.13)
        _blend(img, idx, 0.95 * tick * ((across > 0.96 - length) & (across < 0.96)), RULER_COLOR.astype(f32))

    # acquisition: vignette, lighting gradient, brightness, colour cast, blur
    idx = np.flatnonzero(p["vignette"] > 0)
    if len(idx):
        r0 = np.sqrt(X * X + Y * Y)
        img[idx] *= (1 - col(p["vignette"], idx) * np.clip((r0 - 0.95) / 0.35, 0, 1))[..., None]
    ld = p["_light_dir"]
    grad = 1 + col(p["light_gradient"]) * (col(np.cos(ld)) * X + col(np.sin(ld)) * Y)
    cast = np.stack([1 + 0.12 * p["color_cast"], np.ones(b), 1 - 0.12 * p["color_cast"]], 1)
    img *= (grad * col(p["brightness"]))[..., None] * cast.astype(f32).reshape(b, 1, 1, 3)
    return _blur(img, p["blur"], size)


def render(start: int, stop: int, size: int, seed: int = 0, ood: bool = False,
           bias_strength: float = 0.5, label_noise: float = 0.1) -> Iterator[np.ndarray]:
    """uint8 [k, size, size, 3] chunks of images [start, stop), in order."""
    if not 8 <= size <= 1024:
        raise ValueError(f"size must be in 8..1024, got {size}")
    factor = math.ceil(SUPERSAMPLE_MIN / size) if size < SUPERSAMPLE_MIN else 1
    for lo in range(start, stop, CHUNK):
        yield _render_chunk(lo, min(lo + CHUNK, stop), size, factor, seed, ood, bias_strength, label_noise)


# BLAS threads on these small matrix products cost more than they gain (2.5x slower on 2 cores)
@threadpool_limits.wrap(limits=1, user_api="blas")
def _render_chunk(lo: int, hi: int, size: int, factor: int, seed: int, ood: bool, bias_strength: float,
                  label_noise: float) -> np.ndarray:
    """uint8 images [lo, hi), rendered `factor` times larger and area-averaged down to `size`."""
    p = _params(lo, hi, seed, ood, bias_strength, label_noise)
    img = _render(p, size * factor)
    if factor > 1:
        k = len(img)
        img = img.reshape(k, size, factor, size, factor, 3).mean((2, 4))
    # pixel noise from each image's own seed: independent of chunking
    noise = np.stack([np.random.default_rng(s).standard_normal((size, size, 3), np.float32)
                      for s in p["_noise_seed"]])
    return (np.clip(img + 0.012 * noise, 0, 1) * 255 + 0.5).astype(np.uint8)
