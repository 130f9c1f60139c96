"""Multiply-accumulate counts of a preset at a given input size.

    python3 -m engine_build.macs [--preset NAME] [--size HxW ...]

Counts convolutions and linear layers with forward hooks, plus the matrix
products inside attention (channel attention q k^T and attn v, and the
HIM's cross-attention), which carry no module of their own.
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Callable

import torch
from torch import nn

from . import contract, presets
from .arch.transformer import HIM, Attention
from .model import HIDiff, build, count_params


def count_macs(net: nn.Module, run: Callable[[], object]) -> int:
    total = [0]

    def conv(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        kh, kw = m.kernel_size
        total[0] += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        total[0] += out.numel() * m.in_features

    def mdta(m: Attention, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        b, c, h, w = inp[0].shape
        ch = c // m.num_heads
        total[0] += 2 * b * m.num_heads * ch * ch * h * w

    def him(m: HIM, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        b, c, h, w = inp[0].shape
        tokens = inp[1].shape[1]
        total[0] += 2 * b * h * w * tokens * c

    hooks = []
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear))
        elif isinstance(mod, Attention):
            hooks.append(mod.register_forward_hook(mdta))
        elif isinstance(mod, HIM):
            hooks.append(mod.register_forward_hook(him))
    try:
        with torch.no_grad():
            run()
    finally:
        for hk in hooks:
            hk.remove()
    return total[0]


def macs(m: HIDiff, h: int, w: int) -> dict[str, int]:
    """MACs of one frame. Runs on PyTorch's "meta" device: shapes only, no
    arithmetic, so a 28 M-parameter net at 1280x720 is counted in a blink.
    Works on a copy: the caller's model keeps its weights."""
    m = copy.deepcopy(m).to("meta")
    blur = torch.zeros(1, 3, h, w, device="meta")
    noise = torch.zeros(1, contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS, device="meta")
    prior = count_macs(m.prior, lambda: m.prior(blur, noise))
    trans = count_macs(m.transformer, lambda: m.transformer(blur, noise))
    return {"prior": prior, "transformer": trans, "total": prior + trans}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.macs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=sorted(presets.PRESETS))
    ap.add_argument("--size", action="append", help="HxW (padded to the pad multiple)")
    a = ap.parse_args(argv)
    sizes = a.size or ["256x256", "720x1280"]
    print(f"{'preset':9} {'params':>11} {'size':>10} {'prior GMAC':>11} {'transformer GMAC':>17} {'total GMAC':>11}")
    for name in a.preset or ["gopro", "realblur", "s"]:
        m = build(presets.get(name))
        params = sum(count_params(n) for n in m.networks().values())
        for s in sizes:
            h, w = (int(v) for v in s.lower().split("x"))
            pm = m.pad_multiple
            h, w = h + (-h) % pm, w + (-w) % pm
            r = macs(m, h, w)
            print(f"{name:9} {params:>11,} {f'{h}x{w}':>10} {r['prior'] / 1e9:>11.2f} "
                  f"{r['transformer'] / 1e9:>17.2f} {r['total'] / 1e9:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
