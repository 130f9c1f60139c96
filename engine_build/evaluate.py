"""PyTorch-side quality numbers on a pairs folder (make_pairs output).

    python3 -m engine_build.evaluate --pairs DIR --preset s --weights W
        [--stage1 CKPT] [--limit N] [--json FILE]

Why next to `hidiffd eval`: the Go command measures what ships (ONNX through
the Go backend); this measures the stage-one model, which needs the sharp
image (the ground-truth prior LE(blur, sharp)) and so cannot ship, and
serves as a cross-check of the Go numbers. PSNR and SSIM follow BasicSR
(RGB, 8-bit quantised output, no border crop: engine_build/quality.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import checkpoints, presets
from .diffusion import build_le
from .export import load_model
from .infer import deblur, load_image, pad_to
from .model import HIDiff
from .quality import psnr, quantise, ssim


@torch.no_grad()
def gt_prior_deblur(model: HIDiff, le: torch.nn.Module, blur: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """The stage-one model: Transformer guided by LE(blur, sharp)."""
    h, w = blur.shape[-2:]
    b, s = pad_to(blur, model.pad_multiple), pad_to(sharp, model.pad_multiple)
    return model.transformer(b, le(b, s))[:, :, :h, :w].clamp(0, 1)


def load_stage1(preset: presets.Preset, ckpt: Path) -> tuple[HIDiff, torch.nn.Module]:
    ck = checkpoints.load_pickle(ckpt)
    m = HIDiff(preset).eval()
    m.load_state_dict(ck["model"])
    le = build_le(preset, stage=1).eval()
    le.load_state_dict(ck["le"])
    return m, le


def evaluate(pairs: Path, methods: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
             limit: int = 0) -> dict[str, object]:
    names = sorted(p.name for p in (pairs / "blur").iterdir())
    if limit:
        names = names[:limit]
    per: dict[str, list[tuple[float, float]]] = {k: [] for k in ["blurry", *methods]}
    for n in names:
        blur, sharp = load_image(pairs / "blur" / n), load_image(pairs / "sharp" / n)
        per["blurry"].append((psnr(blur, sharp), ssim(blur, sharp)))
        for k, fn in methods.items():
            out = quantise(fn(blur, sharp))
            per[k].append((psnr(out, sharp), ssim(out, sharp)))
    return {"images": len(names),
            **{k: {"psnr_db": float(np.mean([p for p, _ in v])), "ssim": float(np.mean([s for _, s in v]))}
               for k, v in per.items()},
            "per_image": {n: {k: per[k][i] for k in per} for i, n in enumerate(names)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--preset", default="s")
    ap.add_argument("--weights", help="stage-two weights folder (the shipped model)")
    ap.add_argument("--stage1", help="stage-one ckpt.pt: also score the ground-truth-prior model")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    preset = presets.get(a.preset)
    methods: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}
    if a.weights:
        m, _, _ = load_model(a.preset, a.weights, 0)
        methods["stage2_full_model"] = lambda b, s: deblur(m, b, 0)
        if a.stage1:
            _, le1 = load_stage1(preset, Path(a.stage1))
            methods["stage2_transformer_gt_prior"] = lambda b, s: gt_prior_deblur(m, le1, b, s)
    if a.stage1:
        m1, le = load_stage1(preset, Path(a.stage1))
        methods["stage1_gt_prior"] = lambda b, s: gt_prior_deblur(m1, le, b, s)
    res = evaluate(Path(a.pairs), methods, a.limit)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "per_image"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
