#!/usr/bin/python3
"""Independent reference values for quality_test.go (TestAgainstNumpy).

A plain numpy restatement of BasicSR's basicsr/metrics/psnr_ssim.py
(calculate_psnr / calculate_ssim, crop_border=0, test_y_channel=False): 0..255
float64 values, the full 11x11 window (outer product of the normalised 1-D
Gaussian, sigma 1.5, as cv2.getGaussianKernel(11, 1.5)) applied directly in
2-D over the 'valid' region (what cv2.filter2D followed by [5:-5, 5:-5]
keeps), per channel, channel means averaged. It shares no code with the Go
implementation (which is separable and works on [0,1]); OpenCV is not needed.

The test images are integer formulas, restated in the Go test. Run:
    /usr/bin/python3 quality/testdata/ssim_reference.py
and paste the printed table into quality_test.go.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def image_a(w, h):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * x * 7 + y * 13 + c * 29 + x * y * 3) % 256 for c in range(3)])


def image_b(w, h):
    y, x = np.mgrid[0:h, 0:w]
    a = image_a(w, h)
    d = np.stack([(x * 5 + y * 11 + c * 17) % 41 - 20 for c in range(3)])
    return np.clip(a + d, 0, 255)


def image_c(w, h):
    y, x = np.mgrid[0:h, 0:w]
    s = image_smooth(w, h)
    d = np.stack([(x * 7 + y * y * 3 + c * 11) % 101 - 50 for c in range(3)])
    return np.clip(s + d, 0, 255)


def image_smooth(w, h):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4 + y * 3 + c * 40) % 256 for c in range(3)])


def gaussian_window():
    i = np.arange(11) - 5
    g = np.exp(-(i * i) / (2 * 1.5 ** 2))
    g /= g.sum()
    return np.outer(g, g)


def filt_valid(img, win):
    return np.einsum("ijkl,kl->ij", sliding_window_view(img, win.shape), win)


def ssim_channel(img, img2):
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    win = gaussian_window()
    mu1 = filt_valid(img, win)
    mu2 = filt_valid(img2, win)
    s11 = filt_valid(img * img, win) - mu1 ** 2
    s22 = filt_valid(img2 * img2, win) - mu2 ** 2
    s12 = filt_valid(img * img2, win) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return m.mean()


def ssim(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.mean([ssim_channel(a[c], b[c]) for c in range(a.shape[0])])


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


cases = [
    ("a", "b", 23, 17),
    ("a", "b", 40, 31),
    ("a", "smooth", 32, 32),
    ("smooth", "b", 11, 11),
    ("smooth", "c", 29, 24),
]
images = {"a": image_a, "b": image_b, "c": image_c, "smooth": image_smooth}
for x, y, w, h in cases:
    A, B = images[x](w, h), images[y](w, h)
    print('\t{"%s", "%s", %d, %d, %.15g, %.15g},' % (x, y, w, h, psnr(A, B), ssim(A, B)))
