"""Training: blur synthesis invariants, the split, exact resume, stage two,
validation pairs. Tiny sizes so the file runs in well under a minute."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine_build import batches, checkpoints, data, make_pairs, presets, train

TINY = ["--preset", "s", "--batch", "1", "--patch", "32", "--val-count", "1", "--val-patch", "32",
        "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature photo folder in the real layout (MANIFEST.tsv + files)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    rows = ["path\twidth\theight\tsha256"]
    for rel in ("bsds500/train/a.jpg", "bsds500/train/b.jpg", "urban100/c.jpg",
                "bsds500/val/v1.jpg", "bsds500/val/v2.jpg"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        a = (rng.random((70, 90, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).save(p, quality=95)
        rows.append(f"{rel}\t90\t70\t-")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_kernel_normalised_and_nonnegative() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        k = data.random_kernel(rng)
        assert k.shape == (data.KMAX, data.KMAX)
        assert k.min() >= 0
        assert abs(float(k.sum()) - 1.0) < 1e-5


def test_linear_light_round_trip() -> None:
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(data.linear_to_srgb(data.srgb_to_linear(x)), x, atol=1e-5)


def test_fft_convolution_matches_conv2d() -> None:
    rng = np.random.default_rng(2)
    k = data.random_kernel(rng)
    x = torch.rand(3, 50, 61)
    ref = torch.nn.functional.conv2d(x[None], torch.from_numpy(np.ascontiguousarray(k[::-1, ::-1]))
                                     .expand(3, 1, *k.shape), groups=3)[0]
    assert torch.allclose(data.convolve_valid(x, k), ref, atol=1e-5)


def test_pairs_deterministic_for_seed() -> None:
    photo = (np.random.default_rng(3).random((80, 80, 3)) * 255).astype(np.uint8)
    a = data.random_pair(photo, 32, np.random.default_rng(7))
    b = data.random_pair(photo, 32, np.random.default_rng(7))
    c = data.random_pair(photo, 32, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_batches_skip_photos_too_small_for_the_patch() -> None:
    """A 240-px-tall photo (one of sun80's) cannot give a 256 px patch plus
    blur margins: it is left out of such batches, not a crash (seen on the
    GPU), and a patch no photo fits is refused by name."""
    rng = np.random.default_rng(4)
    small = np.zeros((90, 300, 3), np.uint8)                # short side 90 < 64 + 2 * MARGIN = 94
    big = (rng.random((140, 140, 3)) * 255).astype(np.uint8)
    blur, sharp = data.random_batch([small, big], 6, 64, np.random.default_rng(5))
    assert tuple(sharp.shape) == (6, 3, 64, 64) and all(float(s.std()) > 0.1 for s in sharp)  # all from `big`
    with pytest.raises(ValueError, match="no photo is at least 142 px"):
        data.random_batch([small, big], 1, 112, np.random.default_rng(5))


def test_split_keeps_validation_out_of_training() -> None:
    train_rel, val_rel = data.split(data.manifest())
    assert len(val_rel) == 100 and all(p.startswith("bsds500/val/") for p in val_rel)
    assert not set(train_rel) & set(val_rel)
    assert not any("/val/" in p for p in train_rel)
    assert len(train_rel) == 380


def _weights(run: Path, stage: int) -> dict[str, torch.Tensor]:
    ck = checkpoints.load_pickle(run / f"stage{stage}" / "ckpt.pt")
    return {**{"m." + k: v for k, v in ck["model"].items()}, **{"le." + k: v for k, v in ck["le"].items()}}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stage", [1, 2])
def test_exact_resume(tmp_path: Path, photos: Path, stage: int) -> None:
    common = TINY + ["--photos", str(photos), "--stage", str(stage), "--iters", "4", "--val-every", "2"]
    if stage == 2:
        init = tmp_path / "init"
        train.main(TINY + ["--photos", str(photos), "--stage", "1", "--iters", "1", "--run", str(init)])
        common += ["--init", str(init / "stage1" / "ckpt.pt")]
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(common + ["--run", str(a)])
    train.main(common + ["--run", str(b), "--stop-after", "2"])
    assert checkpoints.load_pickle(b / f"stage{stage}" / "ckpt.pt")["iteration"] == 2
    assert not _same(_weights(a, stage), _weights(b, stage))
    train.main(common + ["--run", str(b)])
    assert _same(_weights(a, stage), _weights(b, stage))
    assert _same(_weights(a, stage), {**{"m." + k: v for k, v in _final(a, stage)["model"].items()},
                                      **{"le." + k: v for k, v in _final(a, stage)["le"].items()}})
    if stage == 2:
        assert (a / "weights" / "net_g.pth").is_file() and (b / "weights" / "net_d.pth").is_file()


def _final(run: Path, stage: int) -> dict:
    return checkpoints.load_pickle(run / f"stage{stage}" / "weights.pt")


def test_stage1_continues_from_weights(tmp_path: Path, photos: Path) -> None:
    """weights.pt (what the repository keeps) starts a new stage-one run."""
    base = TINY + ["--photos", str(photos), "--stage", "1"]
    train.main(base + ["--iters", "2", "--run", str(tmp_path / "a"), "--val-every", "0"])
    w = _final(tmp_path / "a", 1)
    assert "opt" not in w and w["iteration"] == 2
    train.main(base + ["--iters", "1", "--run", str(tmp_path / "b"), "--val-every", "0",
                       "--init", str(tmp_path / "a" / "stage1" / "weights.pt")])
    log = [json.loads(ln) for ln in (tmp_path / "b" / "stage1" / "log.jsonl").read_text().splitlines()]
    assert log[0] == {"event": "init", "from": str(tmp_path / "a" / "stage1" / "weights.pt"),
                      "init_stage": 1, "init_iteration": 2}


def test_stopped_stage_and_official_folder(tmp_path: Path, photos: Path) -> None:
    """What the device call does with a stage stopped by its deadline
    (ckpt.pt -> weights.pt, a third of the size) and what finish does with
    the stage-two weights (the official folder that export reads)."""
    run = tmp_path / "r"
    train.main(TINY + ["--photos", str(photos), "--stage", "1", "--iters", "1", "--run", str(run)])
    train.main(TINY + ["--photos", str(photos), "--stage", "2", "--iters", "3", "--stop-after", "2",
                       "--run", str(run)])
    ckpt, out = run / "stage2" / "ckpt.pt", tmp_path / "w.pt"
    assert not (run / "stage2" / "weights.pt").exists()
    train.strip_checkpoint(ckpt, out)
    w, ck = checkpoints.load_pickle(out), checkpoints.load_pickle(ckpt)
    assert set(w) == set(train.WEIGHTS_KEYS) and w["iteration"] == 2
    assert _same(w["model"], ck["model"]) and _same(w["le"], ck["le"])
    sha = train.save_official(out, tmp_path / "official")
    m, _ = train.stage_modules(presets.get("s"), 9)
    assert checkpoints.load_folder(m, tmp_path / "official") == sha
    assert _same(m.state_dict(), ck["model"])
    with pytest.raises(SystemExit, match="from stage 1"):
        train.save_official(run / "stage1" / "weights.pt", tmp_path / "x")


def test_time_budget_run_stops_and_anneals(tmp_path: Path, photos: Path) -> None:
    train.main(TINY + ["--photos", str(photos), "--stage", "1", "--seconds", "0.5", "--run", str(tmp_path),
                       "--val-every", "0", "--log-every", "1"])
    log = [json.loads(ln) for ln in (tmp_path / "stage1" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "done" and log[-1]["seconds"] >= 0.5
    steps = [r for r in log if "loss" in r]
    assert steps[0]["lr"] == pytest.approx(2e-4) and steps[-1]["lr"] < steps[0]["lr"]
    assert (tmp_path / "stage1" / "weights.pt").is_file()


def test_iters_or_seconds_required(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="exactly one of --iters"):
        train.main(TINY + ["--stage", "1", "--run", str(tmp_path)])


def test_worker_batches_equal_in_process_batches(photos: Path) -> None:
    """Batch i is a pure function of (seed, stage, i): a worker pool makes
    exactly what the training process would, in order, whatever the lookahead."""
    rel, _ = data.split(data.manifest(photos))
    patch_for = lambda i: 16 if i < 3 else 32  # noqa: E731
    ref = batches.Source(photos, rel, 5, 1, 2, patch_for)
    pool = batches.Source(photos, rel, 5, 1, 2, patch_for, workers=2)
    try:
        for i in range(5):
            a, b = ref.get(i), pool.get(i)
            assert a[0].shape[-1] == (16 if i < 3 else 32)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(ref.get(0)[0], ref.get(1)[0])
        assert not torch.equal(batches.Source(photos, rel, 5, 2, 2, patch_for).get(0)[0], ref.get(0)[0])
    finally:
        pool.close()


def test_stage2_loss_runs_and_backpropagates() -> None:
    m, le = train.stage_modules(train.presets.get("s"), 0)
    train.warm_start_le_dm(m, le)
    blur, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    opt = torch.optim.Adam(train.trainable(2, m, le), 1e-3)
    losses = []
    for _ in range(3):
        loss = train.stage2_loss(m, le, blur, sharp, torch.zeros(2, 16, 256))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert m.prior.denoiser.parameters().__next__().grad is not None
    assert all(p.grad is None for p in le.parameters())


def test_schedules() -> None:
    assert train.lr_at(0.0, 2e-4) == pytest.approx(2e-4)
    assert train.lr_at(0.5, 2e-4) == pytest.approx((2e-4 + 1e-6) / 2)
    assert train.lr_at(1.0, 2e-4) == pytest.approx(1e-6)
    assert [train.patch_at(i / 9, [64, 96, 128]) for i in (0, 3, 6, 8)] == [64, 96, 128, 128]
    assert [train.patch_at(f, [64, 96], [0.7, 0.3]) for f in (0.0, 0.69, 0.7, 1.0)] == [64, 64, 96, 96]
    s = train.Schedule(0, 10.0)
    assert s.progress(3, 5.0) == 0.5 and not s.done(3, 9.9) and s.done(1, 10.0)


def test_make_pairs(tmp_path: Path, photos: Path) -> None:
    out = tmp_path / "pairs"
    make_pairs.main(["--out", str(out), "--count", "2", "--photos", str(photos)])
    blur = sorted(p.name for p in (out / "blur").iterdir())
    sharp = sorted(p.name for p in (out / "sharp").iterdir())
    assert blur == sharp == ["v1.png", "v2.png"]
    for n in blur:
        with Image.open(out / "blur" / n) as b, Image.open(out / "sharp" / n) as s:
            assert b.size == s.size == (90, 70)
    first = (out / "blur" / "v1.png").read_bytes()
    make_pairs.main(["--out", str(out), "--count", "2", "--photos", str(photos)])
    assert (out / "blur" / "v1.png").read_bytes() == first


def test_evaluate_metrics() -> None:
    from engine_build import evaluate
    x = torch.rand(1, 3, 24, 24)
    assert evaluate.ssim(x, x) == pytest.approx(1.0)
    assert evaluate.psnr(x, x) == float("inf")
    assert evaluate.ssim(x, torch.rand(1, 3, 24, 24)) < 0.5
    assert evaluate.psnr(x, (x + 0.1).clamp(0, 1)) == pytest.approx(20.0, abs=1.5)
