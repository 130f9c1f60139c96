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
MPX4 = "0.004096"     # 4 iterations of TINY (batch 1 x 32 x 32 px)
MPX = ["--total-mpx", "1"]


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
    return {**{"m." + k: v for k, v in ck["model"].items()}, **{"le." + k: v for k, v in ck["le"].items()},
            **{"ema." + k: v for k, v in ck["ema_model"].items()}}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log(run: Path, stage: int) -> list[dict]:
    return [json.loads(ln) for ln in (run / f"stage{stage}" / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", [1, 2])
def test_exact_resume(tmp_path: Path, photos: Path, stage: int) -> None:
    """A run stopped at iteration 2 and run again to 4 ends bit-identical to
    one that went to 4 at once: weights, EMA, and (schedule) lr."""
    common = TINY + ["--photos", str(photos), "--stage", str(stage), "--total-mpx", MPX4, "--warmup-mpx", "0.001",
                     "--val-every", "2", "--log-every", "1"]
    if stage == 2:
        init = tmp_path / "init"
        train.main(TINY + MPX + ["--photos", str(photos), "--stage", "1", "--iters", "1", "--run", str(init)])
        common += ["--init", str(init / "stage1" / "ckpt.pt")]
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(common + ["--run", str(a), "--iters", "4"])
    train.main(common + ["--run", str(b), "--iters", "2"])
    assert checkpoints.load_pickle(b / f"stage{stage}" / "ckpt.pt")["iteration"] == 2
    assert not _same(_weights(a, stage), _weights(b, stage))
    train.main(common + ["--run", str(b), "--iters", "4"])
    assert _same(_weights(a, stage), _weights(b, stage))
    lrs = lambda run: [r["lr"] for r in _log(run, stage) if "lr" in r and "event" not in r]  # noqa: E731
    assert lrs(a) == lrs(b) and len(lrs(a)) == 4
    w = _final(a, stage)
    assert _same(w["model"], checkpoints.load_pickle(a / f"stage{stage}" / "ckpt.pt")["model"])
    if stage == 2:
        assert (a / "weights" / "net_g.pth").is_file() and (b / "weights" / "net_d.pth").is_file()
        assert {"img", "lat", "prior_gain"} <= set(_log(a, 2)[-4])


def _final(run: Path, stage: int) -> dict:
    return checkpoints.load_pickle(run / f"stage{stage}" / "weights.pt")


def test_resume_refuses_another_schedule(tmp_path: Path, photos: Path) -> None:
    base = TINY + ["--photos", str(photos), "--stage", "1", "--total-mpx", MPX4, "--val-every", "0",
                   "--run", str(tmp_path)]
    train.main(base + ["--iters", "1"])
    with pytest.raises(SystemExit, match="lr = 0.001, this command says 0.002"):
        train.main(base + ["--iters", "2", "--lr", "2e-3"])


def test_compact_state_continues_the_schedule(tmp_path: Path, photos: Path) -> None:
    """What the repository keeps between sessions: the compact state (Adam
    in bf16) continues the same schedule in a new run folder, from the same
    iteration, and is smaller than ckpt.pt."""
    base = TINY + ["--photos", str(photos), "--stage", "1", "--total-mpx", "0.006144", "--val-every", "0",
                   "--log-every", "1"]
    train.main(base + ["--iters", "2", "--run", str(tmp_path / "a")])
    ckpt, kept = tmp_path / "a" / "stage1" / "ckpt.pt", tmp_path / "state"
    train.compact(ckpt, kept)
    parts = sorted(p.name for p in kept.iterdir())
    assert parts == ["adam.pt", "ema.pt", "meta.pt", "weights.pt"]
    assert sum(p.stat().st_size for p in kept.iterdir()) < ckpt.stat().st_size
    train.main(base + ["--iters", "4", "--run", str(tmp_path / "b"), "--resume-from", str(kept)])
    log = _log(tmp_path / "b", 1)
    assert log[0]["event"] == "resume" and log[0]["iter"] == 2
    steps = [r for r in log if "lr" in r and "event" not in r]
    assert [r["iter"] for r in steps] == [3, 4]
    assert steps[0]["lr"] == pytest.approx(train.recipe.lr_at(2048, 1e-3 * (1 / 4) ** 0.5, 0, 6144))   # batch 1
    again = base[:base.index("--total-mpx")] + base[base.index("--total-mpx") + 2:] + \
        train.plan_args(train.load_state(kept)["plan"])
    train.main(again + ["--iters", "5", "--run", str(tmp_path / "b")])     # plan_args gives the same plan
    full, back = checkpoints.load_pickle(ckpt), train.load_state(kept)
    assert _same(full["model"], back["model"])
    for k, v in full["ema_model"].items():      # the EMA kept as a bf16 difference: close, not equal
        d = (v - full["model"][k]).abs().max()
        assert torch.allclose(back["ema_model"][k], v, atol=float(d) / 128 + 1e-12), k


def test_new_schedule_from_weights(tmp_path: Path, photos: Path) -> None:
    """--init starts a new schedule from an earlier run's EMA weights; stage
    two from a stage-one file can take the previous stage two's denoiser."""
    base = TINY + MPX + ["--photos", str(photos), "--val-every", "0"]
    train.main(base + ["--stage", "1", "--iters", "2", "--run", str(tmp_path / "a")])
    w = _final(tmp_path / "a", 1)
    assert "opt" not in w and w["iteration"] == 2 and "ema_model" in w
    train.main(base + ["--stage", "2", "--iters", "1", "--run", str(tmp_path / "a")])
    prev = tmp_path / "a" / "stage2" / "weights.pt"
    train.main(base + ["--stage", "2", "--iters", "1", "--run", str(tmp_path / "b"), "--init",
                       str(tmp_path / "a" / "stage1" / "weights.pt"), "--init-prior", str(prev)])
    ev = _log(tmp_path / "b", 2)[0]
    assert ev["event"] == "init" and ev["init_stage"] == 1 and ev["init_prior"] == str(prev)
    m, _ = train.load_state_modules(tmp_path / "b" / "stage2" / "ckpt.pt", ema=False)
    first = checkpoints.load_pickle(tmp_path / "b" / "stage2" / "ckpt.pt")
    assert first["iteration"] == 1
    with pytest.raises(SystemExit, match="does not exist"):
        train.main(base + ["--stage", "2", "--iters", "1", "--run", str(tmp_path / "c")])


def test_official_folder_from_ema(tmp_path: Path, photos: Path) -> None:
    """save_official writes the EMA weights (what ships) in the official
    layout; a stage-one file is refused."""
    run = tmp_path / "r"
    train.main(TINY + MPX + ["--photos", str(photos), "--stage", "1", "--iters", "1", "--run", str(run)])
    train.main(TINY + MPX + ["--photos", str(photos), "--stage", "2", "--iters", "3", "--run", str(run)])
    w = _final(run, 2)
    assert set(w) == set(train.WEIGHTS_KEYS) and w["iteration"] == 3
    assert not _same(w["model"], w["ema_model"])
    sha = train.save_official(run / "stage2" / "weights.pt", tmp_path / "official")
    m, _ = train.stage_modules(presets.get("s"), 9)
    assert checkpoints.load_folder(m, tmp_path / "official") == sha
    assert _same(m.state_dict(), w["ema_model"])
    with pytest.raises(SystemExit, match="from stage 1"):
        train.save_official(run / "stage1" / "weights.pt", tmp_path / "x")


def test_time_budget_stops_without_reshaping_the_schedule(tmp_path: Path, photos: Path) -> None:
    train.main(TINY + ["--photos", str(photos), "--stage", "1", "--seconds", "0.5", "--total-mpx", "1",
                       "--run", str(tmp_path), "--val-every", "0", "--log-every", "1"])
    log = _log(tmp_path, 1)
    assert log[-1]["event"] == "paused" and log[-1]["seconds"] >= 0.5
    steps = [r for r in log if "lr" in r and "event" not in r]
    assert all(r["lr"] == pytest.approx(train.recipe.lr_at((r["iter"] - 1) * 1024, 5e-4, 0, 10 ** 6)) for r in steps)
    assert (tmp_path / "stage1" / "weights.pt").is_file()


def test_iters_or_seconds_required(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="exactly one of --iters"):
        train.main(TINY + MPX + ["--stage", "1", "--run", str(tmp_path)])
    with pytest.raises(SystemExit, match="--total-mpx T"):
        train.main(TINY + ["--stage", "1", "--run", str(tmp_path), "--iters", "1"])


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
    le.requires_grad_(False)
    plan = train.plan_from_args(train.parser().parse_args(["--stage", "2", "--run", "x", "--iters", "3",
                                                           "--total-mpx", "1"]))
    blur, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    opt = torch.optim.Adam(train.trainable(2, m, le), 1e-3)
    losses = []
    for _ in range(3):
        loss, terms, prior = train.losses(plan, m, le, blur, sharp, torch.zeros(2, 16, 256))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        assert float(loss) == pytest.approx(terms["img"] + terms["lat"], rel=1e-5)
        assert float(prior.abs().max()) <= 1.0   # the reverse clamps; the target z (tanh) fits
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert m.prior.denoiser.parameters().__next__().grad is not None
    assert all(p.grad is None for p in le.parameters())


def test_stage_one_latent_is_bounded_for_s_only() -> None:
    """s bounds z with tanh (inside the reverse process's clamp); the
    released presets keep the released LE."""
    x = torch.rand(2, 3, 32, 32) * 50      # far outside [0, 1]: would push an unbounded z high
    assert float(train.build_le(presets.get("s"), 1)(x, x).abs().max()) <= 1.0
    assert train.build_le(presets.get("gopro"), 1).bound == "released"
    assert train.build_le(presets.get("s"), 2).bound == "released"   # LE_DM: as released


def test_another_batch_and_patch_continue_the_schedule(tmp_path: Path, photos: Path) -> None:
    """A GPU-sized invocation (bigger batch and patch) continues a CPU run's
    schedule: pixels carry on, the lr follows them and scales with sqrt(batch)."""
    base = TINY + ["--photos", str(photos), "--stage", "1", "--total-mpx", "1", "--val-every", "0",
                   "--log-every", "1", "--run", str(tmp_path)]
    train.main(base + ["--iters", "2"])
    train.main([*base, "--iters", "3", "--batch", "3"])
    log = _log(tmp_path, 1)
    assert log[-2]["pixels"] == 2 * 32 * 32 + 3 * 32 * 32
    assert log[-2]["lr"] == pytest.approx(train.recipe.lr_at(2048, 1e-3 * (3 / 4) ** 0.5, 0, 10 ** 6))


def test_schedules() -> None:
    lr = train.recipe.lr_at
    assert lr(0, 1e-3, 10, 100) == pytest.approx(1e-4)          # warm-up
    assert lr(9, 1e-3, 10, 100) == pytest.approx(1e-3)
    assert lr(10, 1e-3, 10, 100) == pytest.approx(1e-3)         # cosine starts at the peak
    assert lr(55, 1e-3, 10, 100) == pytest.approx((1e-3 + 1e-6) / 2)
    assert lr(100, 1e-3, 10, 100) == pytest.approx(1e-6) == lr(500, 1e-3, 10, 100)
    assert [train.recipe.patch_at(i / 9, [64, 96, 128]) for i in (0, 3, 6, 8)] == [64, 96, 128, 128]
    assert [train.recipe.patch_at(f, [64, 96], [0.7, 0.3]) for f in (0.0, 0.69, 0.7, 1.0)] == [64, 64, 96, 96]


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
