"""PyTorch reference: deblur one image the way the official test does.

    python3 -m engine_build.infer --preset gopro --weights DIR INPUT OUTPUT

RGB in [0, 1], reflect pad right/bottom to the pad multiple, seeded starting
noise (the same generator as the Go daemon), prior then transformer, crop,
clamp, 8-bit save. Without --weights: the exporter's seeded random weights.
This is the baseline the Go side is measured against.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import checkpoints
from .export import load_model
from .model import HIDiff
from .noise import prior_noise


def load_image(path: str | Path) -> torch.Tensor:
    """RGB float32 [1,3,H,W] in [0,1]; 16-bit PNGs keep their precision."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I"):
            a = np.asarray(im, dtype=np.float32) / 65535.0
            a = np.repeat(a[..., None], 3, axis=2)
        else:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


def save_image(img: torch.Tensor, path: str | Path) -> None:
    a = (img[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    Image.fromarray(a).save(path)


def pad_to(img: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(img, (0, pw, 0, ph), mode="reflect") if ph or pw else img


@torch.no_grad()
def deblur(m: HIDiff, img: torch.Tensor, seed: int = 0) -> torch.Tensor:
    h, w = img.shape[-2:]
    x = pad_to(img, m.pad_multiple)
    prior = m.prior(x, prior_noise(seed))
    out = m.transformer(x, prior)
    return out[:, :, :h, :w].clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.infer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--weights", help="folder with net_g.pth, net_le_dm.pth, net_d.pth")
    ap.add_argument("--seed", type=int, default=0, help="starting-noise seed (as hidiffd's model.seed)")
    ap.add_argument("--weights-seed", type=int, default=0, help="seed of the random weights (without --weights)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("input")
    ap.add_argument("output")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        m, _, _ = load_model(a.preset, a.weights, a.weights_seed)
    except checkpoints.CheckpointError as e:
        print(f"infer: {e}", file=sys.stderr)
        return 1
    img = load_image(a.input)
    t0 = time.perf_counter()
    out = deblur(m, img, a.seed)
    dt = time.perf_counter() - t0
    save_image(out, a.output)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"infer: {a.input} {img.shape[-1]}x{img.shape[-2]} -> {a.output} in {dt:.2f} s "
          f"(network), peak RSS {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
