from __future__ import annotations

import pytest
import torch
from torch import nn

from engine_build import presets
from engine_build.arch.ops import AdaptiveAvgPool2d, pixel_shuffle, pixel_unshuffle
from engine_build.model import build, count_params


@pytest.mark.parametrize("h,w", [(4, 4), (10, 14), (26, 34), (7, 5), (33, 19)])
def test_pool_equals_adaptive_avg_pool(h: int, w: int) -> None:
    x = torch.randn(2, 5, h, w)
    ours = AdaptiveAvgPool2d((4, 4))(x)
    ref = nn.AdaptiveAvgPool2d((4, 4))(x)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-6)


def test_pixel_shuffles_match_torch() -> None:
    x = torch.randn(1, 8, 12, 20)
    assert torch.equal(pixel_unshuffle(x, 2), nn.PixelUnshuffle(2)(x))
    assert torch.equal(pixel_unshuffle(x, 4), nn.PixelUnshuffle(4)(x))
    y = torch.randn(1, 16, 6, 10)
    assert torch.equal(pixel_shuffle(y, 2), nn.PixelShuffle(2)(y))


def _counts(name: str) -> dict[str, int]:
    return {k: count_params(v) for k, v in build(presets.get(name)).networks().items()}


def test_gopro_parameter_count_is_the_release() -> None:
    c = _counts("gopro")
    assert sum(c.values()) == 28_486_900
    assert c == {"net_g": 25_298_923, "net_le_dm": 558_040, "net_d": 2_629_937}


def test_realblur_parameter_count() -> None:
    assert sum(_counts("realblur").values()) == 24_182_959


def test_small_preset_is_small_and_keeps_the_contract() -> None:
    m = build(presets.get("s"))
    assert sum(count_params(n) for n in m.networks().values()) < 0.15 * 28_486_900
    blur = torch.rand(1, 3, 40, 56)
    noise = torch.randn(1, 16, 256)
    with torch.no_grad():
        prior = m.prior(blur, noise)
        sharp = m.transformer(blur, prior)
    assert prior.shape == (1, 16, 256)
    assert sharp.shape == blur.shape


def test_seeded_random_weights_repeat() -> None:
    a = build(presets.get("s"), seed=3).transformer.output.weight
    b = build(presets.get("s"), seed=3).transformer.output.weight
    c = build(presets.get("s"), seed=4).transformer.output.weight
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_macs_of_the_release_and_the_model_is_untouched() -> None:
    from engine_build.macs import macs
    m = build(presets.get("gopro"))
    r = macs(m, 256, 256)
    # The paper's number for HI-Diff GoPro at 256x256: about 142.6 G.
    assert abs(r["total"] / 1e9 - 142.6) < 0.1
    assert next(m.parameters()).device.type == "cpu"
