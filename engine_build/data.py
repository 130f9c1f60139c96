"""Training data: sharp photos plus motion blur synthesised on the fly.

Why synthetic: we have sharp photos (see shared/data/photos/SOURCES.md beside the checkout)
but no real blurry/sharp pairs we may train on. Blur is made the way a camera
makes it: the sharp image is converted to LINEAR light, convolved with a
camera-shake kernel (a rasterised random trajectory), optionally blended
with a second kernel through a smooth mask (spatially varying blur: rotation,
depth), then sensor noise (Poisson-Gaussian) is added, the result goes back
to sRGB, is quantised to 8 bits and JPEG-compressed, as a camera would.

All randomness comes from one numpy Generator passed in by the caller, so a
batch is a pure function of the generator state (exact resume, seeded
validation).
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# The photos live in the steering repo's shared/ folder, which sits beside
# every checkout (here and in CI's fresh clone); HIDIFFD_PHOTOS overrides.
PHOTOS = Path(os.environ.get("HIDIFFD_PHOTOS")
              or Path(__file__).resolve().parents[2] / "shared" / "data" / "photos")
KMAX = 31                 # largest kernel (odd); every kernel is embedded in KMAX x KMAX
MARGIN = KMAX // 2        # context a "valid" convolution needs around a crop
VAL_PREFIX = "bsds500/val/"


@dataclass(frozen=True)
class BlurConfig:
    """Knobs of the degradation; defaults are the recipe of the shipped model."""
    kmin: int = 7                 # smallest kernel support (px)
    kmax: int = KMAX              # largest kernel support (px)
    linear_share: float = 0.25    # near-linear motion (a smooth, mostly straight path)
    varying_share: float = 0.3    # two kernels blended by a smooth mask
    poisson_max: float = 0.003    # shot-noise gain (linear light)
    gauss_max: float = 0.01       # read-noise sigma (linear light)
    jpeg_min: int = 60
    jpeg_max: int = 95


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Small tensor ops (the blur synthesis) run 10x slower with 2 threads on
    a busy 2-core box; run them single-threaded."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --- photos and split -------------------------------------------------------

def manifest(root: Path = PHOTOS) -> list[str]:
    """Relative paths from MANIFEST.tsv (header skipped), in file order."""
    lines = (root / "MANIFEST.tsv").read_text().splitlines()[1:]
    return [ln.split("\t")[0] for ln in lines if ln.strip()]


def split(paths: list[str]) -> tuple[list[str], list[str]]:
    """(train, val): validation is bsds500/val/* (the CBSD68 images live
    there, so it must never be trained on); training is everything else."""
    val = sorted(p for p in paths if p.startswith(VAL_PREFIX))
    train = sorted(p for p in paths if not p.startswith(VAL_PREFIX))
    return train, val


def load_photo(path: Path) -> np.ndarray:
    """uint8 HxWx3; photos stay 8-bit in memory (380 photos ~ 200 MB)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def load_photos(rel: list[str], root: Path = PHOTOS) -> list[np.ndarray]:
    return [load_photo(root / p) for p in rel]


# --- colour -----------------------------------------------------------------

def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 decoding; blur happens in linear light because that is
    where light from different scene points adds up on the sensor."""
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


# --- kernels ----------------------------------------------------------------

def trajectory(rng: np.random.Generator, n: int, linear: bool) -> np.ndarray:
    """A camera-shake path [n,2] (arbitrary scale): velocity with inertia plus
    random acceleration, occasionally a jerk; `linear` keeps it nearly straight."""
    ang = rng.uniform(0, 2 * np.pi)
    v = np.array([np.cos(ang), np.sin(ang)])
    shake = rng.uniform(0.0, 0.08) if linear else rng.uniform(0.3, 1.2)
    pts = np.zeros((n, 2))
    for i in range(1, n):
        v = v + shake * rng.standard_normal(2)
        if not linear and rng.random() < 0.03:        # sudden jerk
            v = v + rng.standard_normal(2) * 2.0
        v = v / max(np.linalg.norm(v), 1e-6)           # constant speed: shape from direction only
        pts[i] = pts[i - 1] + v
    return pts


def rasterise(pts: np.ndarray, size: int, extent: float, canvas: int = KMAX) -> np.ndarray:
    """Scales the path to `extent` px (longest side of its bounding box),
    centres its centre of mass on the canvas (so blur does not shift the
    image), and splats densely resampled points bilinearly (sub-pixel)."""
    # dense resampling along the polyline: ~8 samples per pixel of travel
    span = (pts.max(0) - pts.min(0)).max()
    pts = pts * (extent / max(span, 1e-6))
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    t = np.concatenate([[0], np.cumsum(seg)])
    m = max(int(t[-1] * 8), 2)
    s = np.linspace(0, t[-1], m)
    dense = np.stack([np.interp(s, t, pts[:, 0]), np.interp(s, t, pts[:, 1])], 1)
    dense = dense - dense.mean(0) + (canvas - 1) / 2
    limit = (size - 1) / 2
    c = (canvas - 1) / 2
    dense = np.clip(dense, c - limit, c + limit)
    k = np.zeros((canvas, canvas))
    x0 = np.floor(dense).astype(int)
    f = dense - x0
    for dx in (0, 1):
        for dy in (0, 1):
            w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1])
            xi, yi = np.clip(x0[:, 0] + dx, 0, canvas - 1), np.clip(x0[:, 1] + dy, 0, canvas - 1)
            np.add.at(k, (yi, xi), w)
    return k / k.sum()


def random_kernel(rng: np.random.Generator, cfg: BlurConfig = BlurConfig()) -> np.ndarray:
    """float32 [KMAX,KMAX], non-negative, sums to 1; support size in kmin..kmax."""
    size = int(rng.integers(cfg.kmin // 2, cfg.kmax // 2 + 1)) * 2 + 1
    linear = rng.random() < cfg.linear_share
    pts = trajectory(rng, 48, linear)
    extent = rng.uniform(0.35, 1.0) * (size - 1)
    return rasterise(pts, size, extent).astype(np.float32)


def smooth_mask(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """[1,1,h,w] in [0,1]: coarse noise upsampled bicubically, then a sigmoid
    with random sharpness; models blur that changes across the frame."""
    g = torch.from_numpy(rng.standard_normal((1, 1, 3, 3)).astype(np.float32))
    m = F.interpolate(g, size=(h, w), mode="bicubic", align_corners=True)
    return torch.sigmoid(m * float(rng.uniform(1.0, 4.0)))


# --- degradation ------------------------------------------------------------

def convolve_valid(lin: torch.Tensor, k: np.ndarray) -> torch.Tensor:
    """[3,H,W] (linear light) * kernel [K,K] -> [3,H-K+1,W-K+1], a true
    convolution. Done by FFT (5x faster than conv2d for 31x31 kernels on
    CPU); circular wrap-around only touches the discarded K//2 border."""
    h, w = lin.shape[-2:]
    r = k.shape[0] // 2
    kp = torch.zeros(h, w)
    kp[:k.shape[0], :k.shape[1]] = torch.from_numpy(k)
    kp = torch.roll(kp, shifts=(-r, -r), dims=(0, 1))   # kernel centre at (0, 0)
    out = torch.fft.irfft2(torch.fft.rfft2(lin) * torch.fft.rfft2(kp), s=(h, w))
    return out[:, r:h - r, r:w - r].contiguous()


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """[3,H,W] sRGB in [0,1] -> 8-bit JPEG round trip (4:2:0, PIL defaults)."""
    a = (img.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        b = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(b.transpose(2, 0, 1)))


def degrade(ctx: torch.Tensor, rng: np.random.Generator, cfg: BlurConfig = BlurConfig()) -> torch.Tensor:
    """sRGB [3,H+2M,W+2M] (the crop plus MARGIN of real context on each side)
    -> blurry sRGB [3,H,W] aligned with ctx's centre."""
    lin = srgb_to_linear(ctx)
    out = convolve_valid(lin, random_kernel(rng, cfg))
    if rng.random() < cfg.varying_share:
        other = convolve_valid(lin, random_kernel(rng, cfg))
        m = smooth_mask(rng, out.shape[1], out.shape[2])[0]
        out = m * out + (1 - m) * other
    a = rng.uniform(0, cfg.poisson_max)
    b = rng.uniform(0, cfg.gauss_max)
    sigma = torch.sqrt(a * out.clamp(min=0) + b * b)
    out = out + sigma * torch.from_numpy(rng.standard_normal(out.shape).astype(np.float32))
    out = linear_to_srgb(out)
    return jpeg(out, int(rng.integers(cfg.jpeg_min, cfg.jpeg_max + 1)))


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 [3,H,W] in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float() / 255.0


def augment(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips and 90-degree rotation of the sharp context crop (done
    before blurring so the kernel distribution stays isotropic)."""
    if rng.random() < 0.5:
        a = a[:, ::-1]
    if rng.random() < 0.5:
        a = a[::-1]
    return np.rot90(a, int(rng.integers(0, 4)))


def random_pair(photo: np.ndarray, patch: int, rng: np.random.Generator,
                cfg: BlurConfig = BlurConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """(blur, sharp) [3,patch,patch] from a random crop of one photo."""
    side = patch + 2 * MARGIN
    h, w = photo.shape[:2]
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    ctx = to_tensor(augment(photo[y:y + side, x:x + side], rng))
    sharp = ctx[:, MARGIN:MARGIN + patch, MARGIN:MARGIN + patch].contiguous()
    return degrade(ctx, rng, cfg), sharp


def random_batch(photos: list[np.ndarray], batch: int, patch: int, rng: np.random.Generator,
                 cfg: BlurConfig = BlurConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch,3,patch,patch] blur and sharp; photos drawn uniformly from
    those with room for the patch and its blur margin (a few photos are
    smaller than a 192 px patch plus margins)."""
    side = patch + 2 * MARGIN
    fits = [p for p in photos if min(p.shape[:2]) >= side]
    if not fits:
        raise ValueError(f"no photo is at least {side} px on its short side (patch {patch} + blur margins)")
    pairs = [random_pair(fits[int(rng.integers(0, len(fits)))], patch, rng, cfg) for _ in range(batch)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def blur_full(photo: np.ndarray, rng: np.random.Generator, cfg: BlurConfig = BlurConfig()) -> torch.Tensor:
    """Blurs a whole photo (reflect padding supplies the border context);
    used for validation pairs written to disk."""
    t = to_tensor(photo)
    ctx = F.pad(t[None], (MARGIN,) * 4, mode="reflect")[0]
    return degrade(ctx, rng, cfg)


def val_crops(photos: list[np.ndarray], count: int, patch: int, seed: int = 1234,
              cfg: BlurConfig = BlurConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation batch: crop i comes from photo i (mod len) with its
    own generator (seed, i), so the set never depends on training state."""
    blurs, sharps = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        b, s = random_pair(photos[i % len(photos)], patch, rng, cfg)
        blurs.append(b)
        sharps.append(s)
    return torch.stack(blurs), torch.stack(sharps)

