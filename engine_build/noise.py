"""Seeded starting noise, bit-identical to deblur.StartingNoise in Go.

The generator is our own (splitmix64 + Box-Muller), so the PyTorch reference
and the Go daemon start the reverse diffusion from exactly the same values.
"""
from __future__ import annotations

import numpy as np
import torch

from . import contract

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def starting_noise(seed: int, n: int) -> np.ndarray:
    """n float32 values ~ N(0, 1); see deblur/noise.go for the definition."""
    pairs = (n + 1) // 2
    k = np.arange(pairs, dtype=np.uint64) * np.uint64(2)
    with np.errstate(over="ignore"):
        s = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        r1 = _splitmix64(s + (k + np.uint64(1)) * _GOLDEN)
        r2 = _splitmix64(s + (k + np.uint64(2)) * _GOLDEN)
    u1 = ((r1 >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0 ** -53
    u2 = (r2 >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    rad = np.sqrt(-2.0 * np.log(u1))
    out = np.empty(pairs * 2, dtype=np.float64)
    out[0::2] = rad * np.cos(2 * np.pi * u2)
    out[1::2] = rad * np.sin(2 * np.pi * u2)
    return out[:n].astype(np.float32)


def prior_noise(seed: int) -> torch.Tensor:
    """The starting noise of one prior, [1, tokens, channels], as the
    daemon makes it for model.seed = seed."""
    n = starting_noise(seed, contract.PRIOR_TOKENS * contract.PRIOR_CHANNELS)
    return torch.from_numpy(n).reshape(1, contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS)
