"""Deterministic blurred/sharp validation pairs for `hidiffd eval --pairs DIR`.

    python3 -m engine_build.make_pairs --out DIR [--count N] [--seed S]

Writes DIR/blur/NAME.png and DIR/sharp/NAME.png for the held-out validation
photos (bsds500/val, never trained on), full images, blurred with the same
synthesis as training. Photo i gets its own generator (seed, i), so a pair
does not depend on --count and the set is identical on every machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import data


def to_png(img: torch.Tensor, path: Path) -> None:
    a = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    Image.fromarray(a).save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.make_pairs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=0, help="first N validation photos (0: all)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--photos", default=str(data.PHOTOS))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(a.photos)
    _, val_rel = data.split(data.manifest(root))
    if a.count:
        val_rel = val_rel[:a.count]
    out = Path(a.out)
    (out / "blur").mkdir(parents=True, exist_ok=True)
    (out / "sharp").mkdir(parents=True, exist_ok=True)
    for i, rel in enumerate(val_rel):
        photo = data.load_photo(root / rel)
        name = Path(rel).stem + ".png"
        to_png(data.blur_full(photo, np.random.default_rng([a.seed, i])), out / "blur" / name)
        Image.fromarray(photo).save(out / "sharp" / name)
    print(f"make_pairs: {len(val_rel)} pairs -> {out}/blur, {out}/sharp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
