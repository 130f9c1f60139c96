"""Two-stage HI-Diff training (the official recipe, sized for short runs).

    python3 -m engine_build.train --stage 1|2 --preset s --run DIR (--iters N | --seconds S)
        [--batch B] [--patch P ...] [--device auto|cpu|cuda] [--workers W] [--val-every K]

Stage one: the latent encoder LE sees blurry AND sharp images and yields the
prior z; LE and the Transformer are trained together under L1(output, sharp).
Stage two: LE is frozen (it provides the target z); z is noised to step T
(`q_sample`), the FULL T-step reverse process runs from there conditioned on
LE_DM(blur), and LE_DM + denoiser + Transformer are trained together under
L1(Transformer(blur, z_pred), sharp) + L1(z_pred, z) (HI_Diff_S2).

Why the checkpoint is so complete: a CPU run is slow and gets interrupted.
DIR/stageN/ckpt.pt holds the weights, Adam state, the iteration, elapsed time
and every random state (python, numpy, torch and the diffusion-noise
generator; batch i is a pure function of seed, stage and i, see batches.py);
the learning rate and patch size are functions of the iteration. Re-running
the same command resumes and continues exactly (bit for bit on CPU). It is
written atomically every --save-every iterations, at the end, and on
SIGTERM/SIGINT. A finished stage also writes DIR/stageN/weights.pt (weights
only, a tenth of ckpt.pt's size without Adam's moments): what a later run
continues from with --init, and what the repository keeps.

--seconds S instead of --iters N makes the schedule a function of training
time: the run ends after S seconds of steps. That is for a lent GPU with a
hard time limit per call; such a run resumes, but not bit for bit.
"""
from __future__ import annotations

import os

# Passive OpenMP waiting must be set before torch loads libgomp: on a shared
# 2-core box, spinning workers made a 2-thread step 5x slower (16 s vs 3.2 s
# measured) whenever another process held a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from . import batches, checkpoints, contract, data, presets  # noqa: E402
from .diffusion import build_le  # noqa: E402
from .model import HIDiff, build, count_params  # noqa: E402
from .noise import starting_noise  # noqa: E402

LR_MIN = 1e-6


# --- schedules (pure functions of the run's progress, nothing to checkpoint) -

def lr_at(progress: float, lr0: float, lr_min: float = LR_MIN) -> float:
    """Cosine annealing from lr0 (progress 0) to lr_min (progress 1)."""
    return lr_min + (lr0 - lr_min) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def patch_at(progress: float, patches: list[int], fractions: list[float] | None = None) -> int:
    """Progressive patch size: patches[j] for the j-th share of the run
    (equal shares unless fractions are given)."""
    fr = fractions or [1.0 / len(patches)] * len(patches)
    edge = 0.0
    for p, f in zip(patches, fr):
        edge += f
        if progress < edge - 1e-12:
            return p
    return patches[-1]


class Schedule:
    """The run's length: --iters (progress = i / iters) or --seconds
    (progress = training seconds / seconds)."""

    def __init__(self, iters: int, seconds: float) -> None:
        self.iters, self.seconds = iters, seconds

    def progress(self, i: int, elapsed: float) -> float:
        return i / self.iters if self.iters else min(elapsed / self.seconds, 1.0)

    def done(self, i: int, elapsed: float) -> bool:
        return i >= self.iters if self.iters else elapsed >= self.seconds


# --- models -----------------------------------------------------------------

def stage_modules(preset: presets.Preset, seed: int) -> tuple[HIDiff, nn.Module]:
    """The full HI-Diff plus the stage-one LE (6 channels in), seeded."""
    m = build(preset, seed=seed)
    torch.manual_seed(seed + 1)
    return m, build_le(preset, stage=1)


def trainable(stage: int, m: HIDiff, le: nn.Module) -> list[nn.Parameter]:
    if stage == 1:
        return list(le.parameters()) + list(m.transformer.parameters())
    return list(m.prior.parameters()) + list(m.transformer.parameters())


def warm_start_le_dm(m: HIDiff, le: nn.Module) -> None:
    """Stage two starts LE_DM from the trained LE: every layer has the same
    shape except the first conv, which in LE sees [sharp, blur] unshuffled
    (48 + 48 channels); LE_DM's sees blur only, so it gets the sum of both
    halves (sharp ~ blur). A head start for a short run; the official recipe
    starts LE_DM from scratch."""
    sd = le.state_dict()
    w = sd["conv1.0.weight"]
    half = w.shape[1] // 2
    sd["conv1.0.weight"] = w[:, :half] + w[:, half:]
    checkpoints.load_strict(m.prior.le_dm, sd, "LE_DM warm start from LE")


def transformer_weights(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Transformer's part of a full HIDiff state dict, prefix removed."""
    return {k[len("transformer."):]: v for k, v in model_state.items() if k.startswith("transformer.")}


# --- losses -----------------------------------------------------------------

def stage1_forward(m: HIDiff, le: nn.Module, blur: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    return m.transformer(blur, le(blur, sharp))


def stage1_loss(m: HIDiff, le: nn.Module, blur: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(stage1_forward(m, le, blur, sharp).float(), sharp)


def stage2_loss(m: HIDiff, le: nn.Module, blur: torch.Tensor, sharp: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = le(blur, sharp).float()
    x_t = m.prior.q_sample(z, noise)
    z_pred = m.prior.reverse(m.prior.le_dm(blur), x_t)
    out = m.transformer(blur, z_pred)
    return F.l1_loss(out.float(), sharp) + F.l1_loss(z_pred.float(), z)


# --- random state -----------------------------------------------------------

def rng_state(noise_gen: torch.Generator) -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
          "noise": noise_gen.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any], noise_gen: torch.Generator) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    noise_gen.set_state(st["noise"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """tmp + fsync + rename: a crash never leaves a half-written ckpt."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


WEIGHTS_KEYS = ("stage", "preset", "iteration", "elapsed", "model", "le")


def strip_checkpoint(ckpt: Path, out: Path) -> None:
    """weights.pt from a ckpt.pt (drop Adam's moments and the random state):
    what a stage stopped early (a device call's time limit) leaves to carry
    on from, at a third of the size."""
    ck = checkpoints.load_pickle(ckpt)
    save_atomic({k: ck[k] for k in WEIGHTS_KEYS}, out)


def save_official(weights: Path, folder: Path) -> str:
    """The official checkpoint folder (net_g/net_le_dm/net_d.pth, what
    export reads) from a stage-two weights.pt; returns its sha256."""
    w = checkpoints.load_pickle(weights)
    if w["stage"] != 2:
        raise SystemExit(f"train: {weights} is from stage {w['stage']}; the model's folder needs stage 2")
    m, _ = stage_modules(presets.get(w["preset"]), 0)
    m.load_state_dict(w["model"])
    return checkpoints.save_folder(m, folder)


# --- validation -------------------------------------------------------------

def fixed_noise(b: int) -> torch.Tensor:
    """The daemon's starting noise for seed 0, repeated over the batch."""
    n = torch.from_numpy(starting_noise(0, contract.PRIOR_TOKENS * contract.PRIOR_CHANNELS))
    return n.reshape(1, contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS).expand(b, -1, -1).contiguous()


@torch.no_grad()
def validate(stage: int, m: HIDiff, le: nn.Module, val: tuple[torch.Tensor, torch.Tensor],
             device: torch.device, chunk: int = 8) -> dict[str, float]:
    """PSNR (dB) on the fixed validation crops: the blurry input, the
    Transformer with the ground-truth prior LE(blur, sharp) (the stage-one
    model), and in stage two the full model (LE_DM + reverse diffusion from
    the daemon's seed-0 noise)."""
    m.eval()
    le.eval()
    blur, sharp = val
    gt, full = [], []
    for i in range(0, len(blur), chunk):
        b, s = blur[i:i + chunk].to(device), sharp[i:i + chunk].to(device)
        gt.append(stage1_forward(m, le, b, s).float().clamp(0, 1).cpu())
        if stage == 2:
            full.append(m(b, fixed_noise(len(b)).to(device)).float().clamp(0, 1).cpu())
    m.train()
    le.train()
    res = {"val_psnr_blurry": data.psnr(blur, sharp), "val_psnr_gt_prior": data.psnr(torch.cat(gt), sharp)}
    res["val_psnr"] = data.psnr(torch.cat(full), sharp) if stage == 2 else res["val_psnr_gt_prior"]
    return res


# --- the loop ---------------------------------------------------------------

class Stop:
    """Set by SIGTERM/SIGINT; the loop finishes its iteration, saves, exits."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, _frame: object) -> None:
        self.requested = True


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def run(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    amp = device.type == "cuda"
    if amp:
        torch.backends.cudnn.benchmark = True            # patch sizes repeat: tune convs once each
        torch.backends.cuda.matmul.allow_tf32 = True     # what bf16 autocast leaves in fp32
        torch.backends.cudnn.allow_tf32 = True
    preset = presets.get(a.preset)
    run_dir = Path(a.run)
    sdir = run_dir / f"stage{a.stage}"
    sdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = sdir / "ckpt.pt"
    log = open(sdir / "log.jsonl", "a")

    def emit(rec: dict[str, Any]) -> None:
        line = json.dumps(rec)
        log.write(line + "\n")
        log.flush()
        if not a.quiet:
            print(line, flush=True)

    random.seed(a.seed)
    np.random.seed(a.seed)
    m, le = stage_modules(preset, a.seed)
    noise_gen = torch.Generator().manual_seed(a.seed)
    sched = Schedule(a.iters, a.seconds)

    start, elapsed = 0, 0.0
    opt_state = None
    if ckpt_path.exists():
        ck = checkpoints.load_pickle(ckpt_path)
        if (ck["iters"], ck.get("seconds", 0.0)) != (a.iters, a.seconds):
            raise SystemExit(f"train: {ckpt_path} was made with --iters {ck['iters']} --seconds "
                             f"{ck.get('seconds', 0.0)}, not --iters {a.iters} --seconds {a.seconds}")
        m.load_state_dict(ck["model"])
        le.load_state_dict(ck["le"])
        opt_state = ck["opt"]
        set_rng_state(ck["rng"], noise_gen)
        start, elapsed = ck["iteration"], ck["elapsed"]
        emit({"event": "resume", "iter": start})
    elif a.stage == 1 and a.init:
        # continue an earlier run's LE + Transformer with a fresh schedule
        # (a stage-two ckpt or weights.pt carries the same LE and Transformer)
        ck0 = checkpoints.load_pickle(Path(a.init))
        le.load_state_dict(ck0["le"])
        m.transformer.load_state_dict(transformer_weights(ck0["model"]))
        emit({"event": "init", "from": a.init, "init_stage": ck0["stage"], "init_iteration": ck0["iteration"]})
    elif a.stage == 2:
        init = Path(a.init) if a.init else run_dir / "stage1" / "ckpt.pt"
        ck1 = checkpoints.load_pickle(init)
        le.load_state_dict(ck1["le"])
        if ck1["stage"] == 2:
            # continue a finished stage two with a fresh schedule (weights only)
            m.load_state_dict(ck1["model"])
        else:
            m.transformer.load_state_dict(transformer_weights(ck1["model"]))
            warm_start_le_dm(m, le)
        emit({"event": "init", "from": str(init), "init_stage": ck1["stage"], "init_iteration": ck1["iteration"]})

    if a.stage == 2:
        le.requires_grad_(False)
    m.to(device).train()
    le.to(device).train()
    params = trainable(a.stage, m, le)
    opt = torch.optim.Adam(params, lr=a.lr, betas=(0.9, 0.99))
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    train_rel, val_rel = data.split(data.manifest(Path(a.photos)))
    with data.threads(1):
        val = data.val_crops(data.load_photos(val_rel, Path(a.photos)), a.val_count, a.val_patch)
    if start == 0:
        emit({"event": "start", "stage": a.stage, "preset": a.preset, "iters": a.iters, "seconds": a.seconds,
              "batch": a.batch, "patches": a.patch, "device": str(device), "threads": a.threads,
              "workers": a.workers, "params_trained": sum(p.numel() for p in params),
              "params_model": count_params(m), "train_photos": len(train_rel), "val_photos": len(val_rel)})

    def weights(i: int) -> dict[str, Any]:
        """What --init reads: weights.pt (WEIGHTS_KEYS), and the core of ckpt.pt."""
        return {"stage": a.stage, "preset": a.preset, "iteration": i, "elapsed": elapsed,
                "model": m.state_dict(), "le": le.state_dict()}

    def checkpoint(i: int) -> None:
        save_atomic({**weights(i), "iters": a.iters, "seconds": a.seconds, "opt": opt.state_dict(),
                     "rng": rng_state(noise_gen), "args": vars(a)}, ckpt_path)

    pace = 0.0   # seconds per step, a moving average (the first step, which waits for workers, left out)

    def patch_for(j: int) -> int:
        # a time-budget run forecasts iteration j's progress from the current pace
        return patch_at(sched.progress(j, elapsed + (j - i) * pace), a.patch, a.patch_fractions)

    stop = Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    losses: list[float] = []
    waited = 0.0     # seconds spent waiting for batches since the last log line (data-starved if large)
    t_mark = time.perf_counter()
    i = start
    source = batches.Source(Path(a.photos), train_rel, a.seed, a.stage, a.batch, patch_for, a.workers)
    try:
        while not sched.done(i, elapsed) and not (a.stop_after and i >= a.stop_after):
            t0 = time.perf_counter()
            lr = lr_at(sched.progress(i, elapsed), a.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            blur, sharp = source.get(i)
            waited += time.perf_counter() - t0
            patch = blur.shape[-1]
            blur, sharp = blur.to(device, non_blocking=True), sharp.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                if a.stage == 1:
                    loss = stage1_loss(m, le, blur, sharp)
                else:
                    noise = torch.randn(blur.shape[0], contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS,
                                        generator=noise_gen).to(device)
                    loss = stage2_loss(m, le, blur, sharp, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, a.clip)
            opt.step()
            losses.append(float(loss.detach()))  # also waits for the GPU, so the timing is real
            i += 1
            step = time.perf_counter() - t0
            elapsed += step
            if i > start + 1:
                pace = step if pace == 0.0 else 0.9 * pace + 0.1 * step
            end = sched.done(i, elapsed) or i == a.stop_after
            if i % a.log_every == 0 or end:
                now = time.perf_counter()
                emit({"iter": i, "loss": sum(losses) / len(losses), "lr": lr, "patch": patch,
                      "seconds": round(elapsed, 1), "s_per_iter": round((now - t_mark) / len(losses), 3),
                      "data_wait": round(waited / max(now - t_mark, 1e-9), 3)})
                losses, waited, t_mark = [], 0.0, now
            if a.val_every and (i % a.val_every == 0 or sched.done(i, elapsed)):
                tv = time.perf_counter()
                emit({"iter": i, "seconds": round(elapsed, 1), **validate(a.stage, m, le, val, device),
                      "val_seconds": round(time.perf_counter() - tv, 1)})
                t_mark += time.perf_counter() - tv
            if stop.requested or i % a.save_every == 0 or end:
                checkpoint(i)
            if stop.requested:
                emit({"event": "stopped", "iter": i, "reason": "signal"})
                return 0
    finally:
        source.close()
    if sched.done(i, elapsed):
        save_atomic(weights(i), sdir / "weights.pt")
        if a.stage == 2:
            sha = checkpoints.save_folder(m.cpu(), run_dir / "weights")
            emit({"event": "weights", "dir": str(run_dir / "weights"), "sha256": sha})
    emit({"event": "done" if sched.done(i, elapsed) else "paused", "iter": i, "seconds": round(elapsed, 1)})
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", type=int, choices=(1, 2), required=True)
    ap.add_argument("--preset", default="s", choices=sorted(presets.PRESETS))
    ap.add_argument("--run", required=True, help="run folder; stage N lives in RUN/stageN")
    ap.add_argument("--iters", type=int, default=0, help="total iterations (the LR schedule spans them)")
    ap.add_argument("--seconds", type=float, default=0.0,
                    help="instead of --iters: seconds of training the schedule spans (a lent GPU's time limit)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, nargs="+", default=[64, 96, 128],
                    help="progressive patch sizes, equal shares of the run (multiples of 16)")
    ap.add_argument("--patch-fractions", type=float, nargs="+", help="share of the run per patch size")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--clip", type=float, default=0.0, help="gradient-norm clip (0: off)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes making batches ahead (0: in the training process; a GPU wants ~1 per core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-every", type=int, default=200, help="0: no validation")
    ap.add_argument("--val-count", type=int, default=16, help="fixed validation crops")
    ap.add_argument("--val-patch", type=int, default=128)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--stop-after", type=int, default=0,
                    help="pause (save and exit) after this iteration; rerun to resume")
    ap.add_argument("--init", help="stage 1: an earlier ckpt.pt (either stage) whose LE + Transformer to "
                    "continue with a fresh schedule. Stage 2: a stage-one ckpt.pt (default RUN/stage1/ckpt.pt), "
                    "or a finished stage-two ckpt.pt to train on with a new schedule")
    ap.add_argument("--photos", default=str(data.PHOTOS))
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if any(p % 16 for p in a.patch) or a.val_patch % 16:
        raise SystemExit("train: patch sizes must be multiples of 16")
    if (a.iters > 0) == (a.seconds > 0):
        raise SystemExit("train: give exactly one of --iters N or --seconds S (both > 0)")
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
