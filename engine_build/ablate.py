"""Ablations: does each part of a trained HI-Diff do its job?

    python3 -m engine_build.ablate (--pairs DIR | --crops N [--crop-size P])
        (--weights W | --state S) [--preset s] [--limit N] [--json FILE]

On a pairs folder (make_pairs output: the held-out validation photos at full
size) or on the training's fixed validation crops (the same photos, N crops
of P px: several times cheaper on a CPU) it scores the full model and the
same model with one part taken away:

- `generated`: the shipped path, prior from LE_DM + reverse diffusion (seed 0);
- `other_prior`: each image gets the NEXT image's generated prior (the prior
  carries per-image information only if this costs something);
- `mean_prior`: every image gets the mean of all generated priors;
- `bypass_<level>`: one Transformer level (its HIM and blocks) replaced by
  the identity (a dead level costs nothing);
- with a stage-one LE (`--state` holding one): `gt_prior` (LE(blur, sharp),
  what stage one trains with) and `gt_prior_shuffled` (the next image's).

Targets for the shipped model (issue 11): other_prior at least 0.2 dB below
generated, gt_prior_shuffled at least 0.5 dB below gt_prior, and every
bypass at least 0.1 dB below generated.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from . import checkpoints, presets
from .infer import load_image, pad_to
from .model import HIDiff
from .noise import prior_noise
from .quality import psnr, quantise

LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent",
          "decoder_level3", "decoder_level2", "decoder_level1", "refinement")


@contextmanager
def bypassed(m: HIDiff, level: str) -> Iterator[None]:
    """The level's forward replaced by the identity for the duration."""
    layer = getattr(m.transformer, level)
    orig = layer.forward

    def identity(x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x

    layer.forward = identity  # type: ignore[method-assign]
    try:
        yield
    finally:
        layer.forward = orig  # type: ignore[method-assign]


@torch.no_grad()
def ablate(m: HIDiff, pairs: list[tuple[torch.Tensor, torch.Tensor]],
           le: Optional[nn.Module] = None) -> dict[str, float]:
    """Mean PSNR (dB, 8-bit quantised output) of every variant over the pairs."""
    m.eval()
    padded = [(pad_to(b, m.pad_multiple), pad_to(s, m.pad_multiple), b.shape[-2:]) for b, s in pairs]
    noise = prior_noise(0)
    gen = [m.prior(b, noise) for b, _, _ in padded]
    mean = torch.stack(gen).mean(0)
    n = len(pairs)

    def score(prior_of: Callable[[int], torch.Tensor]) -> float:
        tot = 0.0
        for i, (b, _, (h, w)) in enumerate(padded):
            out = m.transformer(b, prior_of(i))[:, :, :h, :w]
            tot += psnr(quantise(out), pairs[i][1])
        return tot / n

    res = {"blurry": sum(psnr(b, s) for b, s in pairs) / n,
           "generated": score(lambda i: gen[i]),
           "other_prior": score(lambda i: gen[(i + 1) % n]),
           "mean_prior": score(lambda i: mean)}
    for level in LEVELS:
        with bypassed(m, level):
            res[f"bypass_{level}"] = score(lambda i: gen[i])
    if le is not None:
        le.eval()
        gt = [le(b, s) for b, s, _ in padded]
        res["gt_prior"] = score(lambda i: gt[i])
        res["gt_prior_shuffled"] = score(lambda i: gt[(i + 1) % n])
    return res


def deltas(res: dict[str, float]) -> dict[str, float]:
    """Each variant's PSNR minus the generated prior's (gt_prior_shuffled:
    minus gt_prior's)."""
    out = {k: v - res["generated"] for k, v in res.items() if k not in ("blurry", "generated", "gt_prior_shuffled")}
    if "gt_prior_shuffled" in res:
        out["gt_prior_shuffled"] = res["gt_prior_shuffled"] - res["gt_prior"]
    return out


def load_pairs(folder: Path, limit: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    names = sorted(p.name for p in (folder / "blur").iterdir())
    if limit:
        names = names[:limit]
    return [(load_image(folder / "blur" / n), load_image(folder / "sharp" / n)) for n in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.ablate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--pairs", help="a make_pairs folder")
    where.add_argument("--crops", type=int, help="the training's fixed validation crops (data.val_crops)")
    ap.add_argument("--crop-size", type=int, default=64)
    ap.add_argument("--preset", default="s")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="official-layout folder (net_g/net_le_dm/net_d.pth), e.g. build/train/RUN/weights")
    src.add_argument("--state", help="a training state or weights.pt (stage 2 for the full model; "
                     "its stage-one LE adds the gt_prior rows)")
    ap.add_argument("--ema", action="store_true", help="with --state: score its EMA weights")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from . import train  # late: train pulls in the data pipeline
    le = None
    if a.weights:
        m = HIDiff(presets.get(a.preset))
        checkpoints.load_folder(m, a.weights)
    else:
        m, le = train.load_state_modules(Path(a.state), ema=a.ema)
    if a.pairs:
        pairs = load_pairs(Path(a.pairs), a.limit)
    else:
        from . import data
        _, val_rel = data.split(data.manifest())
        with data.threads(1):
            blur, sharp = data.val_crops(data.load_photos(val_rel), a.crops, a.crop_size)
        pairs = [(b[None], s[None]) for b, s in zip(blur, sharp)]
    res = ablate(m, pairs, le)
    out = {"images": len(pairs), "source": a.pairs or f"{a.crops} validation crops of {a.crop_size} px",
           "psnr_db": res, "delta_db": deltas(res)}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
