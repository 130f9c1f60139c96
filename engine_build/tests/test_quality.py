"""engine_build.quality pinned on the numbers the Go quality package is
pinned on (quality/quality_test.go, TestAgainstNumpy; printed by
quality/testdata/ssim_reference.py, a plain numpy restatement of BasicSR),
so the Python and Go PSNR/SSIM cannot drift apart."""
from __future__ import annotations

import math

import pytest
import torch

from engine_build import quality


def image(kind: str, w: int, h: int) -> torch.Tensor:
    """The test images of ssim_reference.py: integer formulas on 0..255,
    returned as [1,3,H,W] float32 in [0,1], as an 8-bit file decodes."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    chans = []
    for c in range(3):
        a = (x * x * 7 + y * 13 + c * 29 + x * y * 3) % 256
        smooth = (x * 4 + y * 3 + c * 40) % 256
        v = {"a": a,
             "b": a + (x * 5 + y * 11 + c * 17) % 41 - 20,
             "c": smooth + (x * 7 + y * y * 3 + c * 11) % 101 - 50,
             "smooth": smooth}[kind]
        chans.append(v.clamp(0, 255))
    return (torch.stack(chans).float() / 255)[None]


# (a, b, w, h, psnr, ssim): the table of quality_test.go's TestAgainstNumpy.
REFERENCE = [
    ("a", "b", 23, 17, 26.8624642133356, 0.987639098532532),
    ("a", "b", 40, 31, 26.861472302196, 0.987664604326147),
    ("a", "smooth", 32, 32, 8.68182510881264, 0.01037846371922),
    ("smooth", "b", 11, 11, 9.0416499770754, 0.00152430449246003),
    ("smooth", "c", 29, 24, 18.9526007993317, 0.204719987825762),
]


@pytest.mark.parametrize("ka,kb,w,h,want_psnr,want_ssim", REFERENCE,
                         ids=[f"{r[0]}-{r[1]}-{r[2]}x{r[3]}" for r in REFERENCE])
def test_matches_go_and_basicsr(ka: str, kb: str, w: int, h: int, want_psnr: float, want_ssim: float) -> None:
    a, b = image(ka, w, h), image(kb, w, h)
    assert quality.psnr(a, b) == pytest.approx(want_psnr, abs=1e-5)
    assert quality.ssim(a, b) == pytest.approx(want_ssim, abs=1e-7)


def test_psnr_exact_values() -> None:
    # The exact cases of quality_test.go's TestPSNR: MSE 1/16 and 0.125.
    x = torch.full((1, 3, 10, 20), 0.25)
    assert quality.psnr(x, torch.full_like(x, 0.5)) == pytest.approx(12.041199826559248, abs=1e-12)
    y = torch.zeros(1, 3, 10, 20)
    x = torch.zeros_like(y)
    x.view(-1)[::2] = 0.5
    assert quality.psnr(x, y) == pytest.approx(10 * math.log10(8), abs=1e-12)
    assert quality.psnr(y, y) == math.inf


def test_psnr_batch_is_mean_of_images() -> None:
    # BasicSR averages per-image PSNR over a set; pooling the MSE would give
    # another number (here 20 dB and 40 dB average to 30; pooled, 23).
    ref = torch.zeros(2, 3, 8, 8)
    out = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])
    assert quality.psnr(out[:1], ref[:1]) == pytest.approx(20.0, abs=1e-5)
    assert quality.psnr(out[1:], ref[1:]) == pytest.approx(40.0, abs=1e-5)
    assert quality.psnr(out, ref) == pytest.approx(30.0, abs=1e-5)
    assert quality.psnr(out[0], ref[0]) == pytest.approx(20.0, abs=1e-5)  # one [3,H,W] image


def test_psnr_does_not_clamp() -> None:
    # Values outside [0,1] count as they are (the Go side does not clamp
    # either); callers quantise or clamp raw network output first.
    ref = torch.zeros(1, 3, 4, 4)
    assert quality.psnr(torch.full_like(ref, 1.1), ref) < quality.psnr(torch.full_like(ref, 1.0), ref)
    with pytest.raises(ValueError, match="shape"):
        quality.psnr(ref, ref[:, :2])


def test_ssim_identical_is_one_and_quantise_matches_encoder() -> None:
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    assert quality.ssim(x, x) == pytest.approx(1.0)
    assert quality.ssim(x, torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))) < 0.5
    q = quality.quantise(torch.tensor([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.2]))
    assert q.tolist() == pytest.approx([0.0, 0.0, 0.0, 2 / 255, 128 / 255, 1.0])
