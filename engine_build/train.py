"""Two-stage HI-Diff training, one schedule that continues across sessions.

    python3 -m engine_build.train --stage 1|2 --preset s --run DIR --total-mpx T
        (--iters N | --seconds S) [--lr L] [--warmup-mpx W] [--loss l1|charbonnier|psnr]
        [--batch B] [--patch P ...] [--device auto|cpu|cuda] [--workers W]
        [--init FILE | --resume-from STATE] [--init-prior FILE]

Stage one: the latent encoder LE sees blurry AND sharp images and yields the
prior z (bounded by tanh for our presets, see Preset.latent_bound); LE and
the Transformer are trained together on the image loss. Stage two: LE is
frozen (it provides the target z); z is noised to step T (`q_sample`), the
FULL T-step reverse process runs from there conditioned on LE_DM(blur), and
LE_DM + denoiser + Transformer are trained together on the image loss of
Transformer(blur, z_pred) plus L1(z_pred, z) (HI_Diff_S2).

The schedule is a function of the training pixels seen, not of steps, so
that a CPU session (batch 4, 64-128 px) and a GPU call (batch 32+, 256 px)
continue ONE schedule: linear warm-up over --warmup-mpx megapixels, then
cosine from the peak to 1e-6 at --total-mpx. The peak is --lr at batch
--lr-batch, scaled by sqrt(batch / lr-batch) for another batch (Adam's
square-root rule, capped at 2x), and the patch sizes follow the schedule's
progress.
--iters N stops this invocation at iteration N, --seconds S after S seconds
of steps; running again continues the same schedule with the same Adam
state. The state (DIR/stageN/ckpt.pt) holds the weights, their
EMA (what ships), Adam, the iteration, the pixels seen and every random
state; batch i is a pure function of (seed, stage, i), so a resumed run is
bit-identical on CPU. `--resume-from STATE` starts DIR from a state kept
elsewhere (the repository keeps one, compacted: `compact`), which is how a
new session continues the last one. `--init FILE` instead starts a NEW
schedule from an earlier run's weights (weights only).

Each log line has the loss terms separately (img, fft, lat) and, every
--log-every iterations, `prior_gain`: the image loss with each image given
another image's prior, minus with its own. It is what the prior is worth to
the Transformer; near 0 means the prior is ignored.
"""
from __future__ import annotations

import os

# Passive OpenMP waiting must be set before torch loads libgomp: on a shared
# 2-core box, spinning workers made a 2-thread step 5x slower (16 s vs 3.2 s
# measured) whenever another process held a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from . import batches, checkpoints, contract, data, macs, presets, recipe  # noqa: E402
from .quality import psnr  # noqa: E402
from .diffusion import build_le  # noqa: E402
from .model import HIDiff, build, count_params  # noqa: E402
from .noise import prior_noise  # noqa: E402


# --- the schedule (stored in the state; a resumed run must not change it) ----

@dataclass(frozen=True)
class Plan:
    stage: int
    preset: str
    lr: float
    lr_batch: int
    warmup_mpx: float
    total_mpx: float
    loss: str
    fft_weight: float
    latent_weight: float
    ema_decay: float
    clip: float
    seed: int
    latent_bound: str

    def lr_at(self, pixels: int, batch: int) -> float:
        # sqrt scaling, capped at 2x: a peak above twice the one measured on
        # the CPU has never been tried on this Transformer, and a lent GPU's
        # one call cannot afford a divergence
        peak = self.lr * min((batch / self.lr_batch) ** 0.5, 2.0)
        return recipe.lr_at(pixels, peak, int(self.warmup_mpx * 1e6), int(self.total_mpx * 1e6))

    def progress(self, pixels: int) -> float:
        return pixels / (self.total_mpx * 1e6)


def plan_from_args(a: argparse.Namespace) -> Plan:
    return Plan(stage=a.stage, preset=a.preset, lr=a.lr, lr_batch=a.lr_batch, warmup_mpx=a.warmup_mpx,
                total_mpx=a.total_mpx, loss=a.loss, fft_weight=a.fft_weight, latent_weight=a.latent_weight, ema_decay=a.ema_decay,
                clip=a.clip, seed=a.seed, latent_bound=a.latent_bound or presets.get(a.preset).latent_bound)


def plan_args(plan: dict[str, Any]) -> list[str]:
    """The command-line flags that give this plan (stage and preset aside):
    what a script passes to continue a state's schedule."""
    flags = {"lr": "--lr", "lr_batch": "--lr-batch", "warmup_mpx": "--warmup-mpx", "total_mpx": "--total-mpx",
             "loss": "--loss", "fft_weight": "--fft-weight", "latent_weight": "--latent-weight",
             "ema_decay": "--ema-decay", "clip": "--clip", "seed": "--seed", "latent_bound": "--latent-bound"}
    return [x for k, f in flags.items() for x in (f, str(plan[k]))]


def check_same_plan(saved: dict[str, Any], plan: Plan, where: Path) -> None:
    """A resumed run continues ITS schedule: any difference is refused by name."""
    new = asdict(plan)
    for k, v in new.items():
        old = saved.get(k)
        if isinstance(old, list):
            old = tuple(old)
        if old != v:
            raise SystemExit(f"train: {where} was made with {k} = {old!r}, this command says {v!r}; "
                             f"resume with the same value, or start a new schedule with --init")


# --- models -----------------------------------------------------------------

def stage_modules(preset: presets.Preset, seed: int) -> tuple[HIDiff, nn.Module]:
    """The full HI-Diff plus the stage-one LE (6 channels in), seeded."""
    m = build(preset, seed=seed)
    torch.manual_seed(seed + 1)
    return m, build_le(preset, stage=1)


def fresh_modules(preset: presets.Preset, seed: int) -> tuple[HIDiff, nn.Module]:
    """stage_modules with the recipe's initialisation: FiLM as identity and
    every HIM starting as the identity (recipe.film_identity,
    zero_him_projections)."""
    m, le = stage_modules(preset, seed)
    recipe.film_identity(m.transformer)
    recipe.zero_him_projections(m.transformer)
    return m, le


def trainable(stage: int, m: HIDiff, le: nn.Module) -> list[nn.Parameter]:
    if stage == 1:
        return list(le.parameters()) + list(m.transformer.parameters())
    return list(m.prior.parameters()) + list(m.transformer.parameters())


def trainable_names(stage: int, m: HIDiff, le: nn.Module) -> list[tuple[str, str]]:
    """(state, key) of each of trainable()'s parameters, in its order:
    state "le" or "model", key its state-dict name there."""
    if stage == 1:
        return [("le", n) for n, _ in le.named_parameters()] + \
            [("model", "transformer." + n) for n, _ in m.transformer.named_parameters()]
    return [("model", "prior." + n) for n, _ in m.prior.named_parameters()] + \
        [("model", "transformer." + n) for n, _ in m.transformer.named_parameters()]


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


def part(model_state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """One sub-module's part of a full HIDiff state dict, prefix removed."""
    return {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}


def transformer_weights(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return part(model_state, "transformer.")


# --- forward passes and losses ----------------------------------------------

def stage1_forward(m: HIDiff, le: nn.Module, blur: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    return m.transformer(blur, le(blur, sharp))


def stage2_prior(m: HIDiff, le: nn.Module, blur: torch.Tensor, sharp: torch.Tensor,
                 noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_pred, z): the reverse process from q_sample(z, noise) conditioned
    on LE_DM(blur), and its target z = LE(blur, sharp)."""
    with torch.no_grad():
        z = le(blur, sharp).float()
    return m.prior.reverse(m.prior.le_dm(blur), m.prior.q_sample(z, noise)), z


def losses(plan: Plan, m: HIDiff, le: nn.Module, blur: torch.Tensor, sharp: torch.Tensor,
           noise: Optional[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """(total loss, its terms as floats, the prior used)."""
    if plan.stage == 1:
        prior = le(blur, sharp)
        lat = None
    else:
        assert noise is not None
        prior, z = stage2_prior(m, le, blur, sharp, noise)
        lat = F.l1_loss(prior.float(), z)
    out = m.transformer(blur, prior)
    img = recipe.image_loss(out, sharp, plan.loss)
    total, terms = img, {"img": float(img.detach())}
    if plan.fft_weight:
        fft = recipe.fft_loss(out, sharp)
        total = total + plan.fft_weight * fft
        terms["fft"] = float(fft.detach())
    if lat is not None:
        total = total + plan.latent_weight * lat
        terms["lat"] = float(lat.detach())
    return total, terms, prior


@torch.no_grad()
def prior_gain(plan: Plan, m: HIDiff, blur: torch.Tensor, sharp: torch.Tensor, prior: torch.Tensor) -> float:
    """Image loss with each image given the next image's prior, minus with
    its own: > 0 when the Transformer uses what the prior says."""
    if len(blur) < 2:
        return 0.0
    prior = prior.detach()
    own = recipe.image_loss(m.transformer(blur, prior), sharp, plan.loss)
    other = recipe.image_loss(m.transformer(blur, prior.roll(1, 0)), sharp, plan.loss)
    return float(other - own)


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


# --- state files ------------------------------------------------------------

def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """tmp + fsync + rename: a crash never leaves a half-written state."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


WEIGHTS_KEYS = ("stage", "preset", "latent_bound", "iteration", "elapsed", "pixels", "model", "le", "ema_model", "ema_le")


def strip_checkpoint(ckpt: Path, out: Path) -> None:
    """weights.pt from a ckpt.pt (drop Adam's moments and the random state):
    what --init and save_official read."""
    ck = checkpoints.load_pickle(ckpt)
    save_atomic({k: ck[k] for k in WEIGHTS_KEYS}, out)


PARTS = {"weights.pt": ("model", "le"), "ema.pt": ("ema_model", "ema_le"), "adam.pt": ("opt",)}


def _ema_delta(ema: dict[str, torch.Tensor], live: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EMA minus the live weights, in bfloat16: the difference is small, so
    its 8-bit mantissa costs ~0.4% of the difference, not of the weight."""
    return {k: (v - live[k]).to(torch.bfloat16) if v.is_floating_point() else v for k, v in ema.items()}


def _ema_undelta(delta: dict[str, torch.Tensor], live: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: live[k] + v.float() if v.is_floating_point() else v for k, v in delta.items()}


def compact(ckpt: Path, out: Path) -> None:
    """The state the repository keeps between sessions, as a folder: the
    whole ckpt.pt split in parts of < 16 MiB each (a device call returns
    files up to that size), ~24 MB instead of ~42 (a device call also
    carries at most 64 MiB, photos included): Adam's moments as bfloat16
    (running averages), the EMA as a bfloat16 difference from the live
    weights, the frozen LE's EMA (= the LE) and the EMA's shadow (=
    ema_model's trainable entries) not stored twice. Resuming from it is
    therefore not bit-exact (a ckpt.pt within a session is).
    `--resume-from OUT` continues the schedule from it."""
    ck = checkpoints.load_pickle(ckpt)
    for st in ck["opt"]["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            st[k] = st[k].to(torch.bfloat16)
    ck["ema"] = {k: v for k, v in ck["ema"].items() if k != "shadow"}
    # the command's arguments, without this machine's absolute paths (the
    # photos folder): the repository names no machine's paths
    ck["args"] = {k: ("(absolute path)" if isinstance(v, str) and os.path.isabs(v) else v)
                  for k, v in ck["args"].items()}
    ck["ema_model"] = _ema_delta(ck["ema_model"], ck["model"])
    ck["ema_le"] = None if ck["stage"] == 2 else _ema_delta(ck["ema_le"], ck["le"])
    out.mkdir(parents=True, exist_ok=True)
    for name, keys in PARTS.items():
        save_atomic({k: ck.pop(k) for k in keys}, out / name)
    save_atomic({**ck, "compact": True}, out / "meta.pt")


def load_state(path: Path) -> dict[str, Any]:
    """A ckpt.pt or weights.pt file, or a compact state folder, as one dict."""
    if not path.is_dir():
        return checkpoints.load_pickle(path)
    ck = checkpoints.load_pickle(path / "meta.pt")
    for name in PARTS:
        ck.update(checkpoints.load_pickle(path / name))
    ck["ema_model"] = _ema_undelta(ck["ema_model"], ck["model"])
    ck["ema_le"] = ck["le"] if ck["ema_le"] is None else _ema_undelta(ck["ema_le"], ck["le"])
    for st in ck["opt"]["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            st[k] = st[k].float()
    return ck


def ema_state(ck: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    """The EMA of module `name` ("model" or "le") as a full state dict."""
    return ck.get(f"ema_{name}") or ck[name]


def load_state_modules(path: Path, ema: bool = True) -> tuple[HIDiff, nn.Module]:
    """(HIDiff, stage-one LE) from a ckpt.pt, weights.pt or compact state;
    the EMA weights by default (what ships)."""
    return modules_from_state(load_state(path), ema)


def modules_from_state(ck: dict[str, Any], ema: bool = True) -> tuple[HIDiff, nn.Module]:
    preset = presets.get(ck["preset"])
    m, le = stage_modules(replace(preset, latent_bound=ck.get("latent_bound", "released")), 0)
    m.load_state_dict(ema_state(ck, "model") if ema else ck["model"])
    le.load_state_dict(ema_state(ck, "le") if ema else ck["le"])
    return m.eval(), le.eval()


def save_official(weights: Path, folder: Path, ema: bool = True) -> str:
    """The official checkpoint folder (net_g/net_le_dm/net_d.pth, what
    export reads) from a stage-two state or weights.pt, EMA weights by
    default; returns its sha256."""
    w = load_state(weights)
    if w["stage"] != 2:
        raise SystemExit(f"train: {weights} is from stage {w['stage']}; the model's folder needs stage 2")
    m, _ = modules_from_state(w, ema)
    return checkpoints.save_folder(m, folder)


# --- validation -------------------------------------------------------------

def fixed_noise(b: int) -> torch.Tensor:
    """The daemon's starting noise for seed 0, repeated over the batch."""
    return prior_noise(0).expand(b, -1, -1).contiguous()


@torch.no_grad()
def validate(stage: int, m: HIDiff, le: nn.Module, val: tuple[torch.Tensor, torch.Tensor],
             device: torch.device, chunk: int = 16) -> dict[str, float]:
    """PSNR (dB) on the fixed validation crops: the blurry input; the
    Transformer with the ground-truth prior LE(blur, sharp) and with each
    crop given the next crop's (what stage one is, and what its prior is
    worth); in stage two the full model (LE_DM + reverse diffusion from the
    daemon's seed-0 noise), which is what ships."""
    was = m.training
    m.eval()
    le.eval()
    blur, sharp = val
    gt, shuffled, full = [], [], []
    for i in range(0, len(blur), chunk):
        b, s = blur[i:i + chunk].to(device), sharp[i:i + chunk].to(device)
        z = le(b, s)
        gt.append(m.transformer(b, z).float().clamp(0, 1).cpu())
        shuffled.append(m.transformer(b, z.roll(1, 0)).float().clamp(0, 1).cpu())
        if stage == 2:
            full.append(m(b, fixed_noise(len(b)).to(device)).float().clamp(0, 1).cpu())
    m.train(was)
    le.train(was)
    res = {"blurry": psnr(blur, sharp), "gt_prior": psnr(torch.cat(gt), sharp),
           "gt_prior_shuffled": psnr(torch.cat(shuffled), sharp)}
    res["model"] = psnr(torch.cat(full), sharp) if stage == 2 else res["gt_prior"]
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


class Trainer:
    """One invocation: set up (resume, or a new schedule), run steps until
    --iters/--seconds/a signal, save. Each phase is a method."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.plan = plan_from_args(a)
        self.preset = replace(presets.get(a.preset), latent_bound=self.plan.latent_bound)
        self.device = pick_device(a.device)
        self.amp = self.device.type == "cuda"
        self.sdir = Path(a.run) / f"stage{a.stage}"
        self.sdir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.sdir / "ckpt.pt"
        self.log = open(self.sdir / "log.jsonl", "a")
        random.seed(a.seed)
        np.random.seed(a.seed)
        # --released-init: PyTorch's default init everywhere, as the first
        # runs had (the A side of the recipe's A/B); the recipe's otherwise
        self.m, self.le = (stage_modules if a.released_init else fresh_modules)(self.preset, a.seed)
        self.noise_gen = torch.Generator().manual_seed(a.seed)
        # pixels: seen along the whole chain of runs (the learning curve);
        # the schedule counts from pixels0, where it started
        self.i, self.elapsed, self.pixels, self.pixels0 = 0, 0.0, 0, 0
        self.session_seconds = 0.0

    def emit(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec)
        self.log.write(line + "\n")
        self.log.flush()
        if not self.a.quiet:
            print(line, flush=True)

    # phase 1: where the weights come from
    def load(self) -> Optional[dict[str, Any]]:
        """Returns the optimiser/EMA state to restore (a resumed run), or None."""
        a = self.a
        src = self.ckpt_path if self.ckpt_path.exists() else (Path(a.resume_from) if a.resume_from else None)
        if src is not None:
            ck = load_state(src)
            if ck["stage"] != a.stage:
                raise SystemExit(f"train: {src} is a stage-{ck['stage']} state, not stage {a.stage}")
            check_same_plan(ck["plan"], self.plan, src)
            self.m.load_state_dict(ck["model"])
            self.le.load_state_dict(ck["le"])
            set_rng_state(ck["rng"], self.noise_gen)
            self.i, self.elapsed, self.pixels = ck["iteration"], ck["elapsed"], ck["pixels"]
            self.pixels0 = ck["schedule_from_pixels"]
            self.emit({"event": "resume", "from": str(src), "iter": self.i, "pixels": self.pixels,
                       "batch": a.batch, "patches": a.patch, "val_crops": a.val_count, "val_patch": a.val_patch})
            return ck
        if a.init:
            self.init_from(Path(a.init))
        elif a.stage == 2:
            self.init_from(Path(a.run) / "stage1" / "ckpt.pt")
        return None

    def init_from(self, path: Path) -> None:
        """A new schedule from an earlier run's weights (its EMA if it has one)."""
        a, m, le = self.a, self.m, self.le
        if not path.exists():
            raise SystemExit(f"train: {path} does not exist (stage 2 starts from a stage-one state: "
                             f"run stage 1 in this --run first, or give --init)")
        ck = load_state(path)
        model = ema_state(ck, "model")
        if a.fresh_le:
            if a.stage != 1:
                raise SystemExit("train: --fresh-le is for stage 1 (stage 2 needs the trained LE as its target)")
        else:
            le.load_state_dict(ema_state(ck, "le"))
        if a.stage == 2 and ck["stage"] == 2:
            m.load_state_dict(model)                    # continue a finished stage two
        else:
            m.transformer.load_state_dict(transformer_weights(model))
            if a.stage == 2:
                warm_start_le_dm(m, le)
                if a.init_prior:                         # the previous denoiser, not a fresh one
                    prev = ema_state(load_state(Path(a.init_prior)), "model")
                    m.prior.load_state_dict(part(prev, "prior."))
        if a.revive_latent:
            recipe.revive_latent_level(m.transformer, a.seed)
        self.emit({"event": "init", "from": str(path), "init_stage": ck["stage"],
                   "init_iteration": ck["iteration"], "init_prior": a.init_prior,
                   "revive_latent": a.revive_latent, "fresh_le": a.fresh_le})
        self.pixels = self.pixels0 = int(ck.get("pixels", 0))

    # phase 2: optimiser, EMA, data
    def prepare(self, resumed: Optional[dict[str, Any]]) -> None:
        a = self.a
        if self.amp:
            torch.backends.cudnn.benchmark = True            # patch sizes repeat: tune convs once each
            torch.backends.cuda.matmul.allow_tf32 = True     # what bf16 autocast leaves in fp32
            torch.backends.cudnn.allow_tf32 = True
        if a.stage == 2:
            self.le.requires_grad_(False)
        # training FLOPs per pixel: forward MACs x 2 (multiply + add) x 3
        # (forward + backward ~ 3 forwards); for the `tflops` log field
        self.flops_px = 6 * macs.macs(self.m, 64, 64)["total"] / 64 ** 2
        self.fmt = torch.channels_last if a.channels_last else torch.contiguous_format
        self.m.to(self.device, memory_format=self.fmt).train()
        self.le.to(self.device, memory_format=self.fmt).train()
        self.params = trainable(a.stage, self.m, self.le)
        self.opt = torch.optim.Adam(self.params, lr=self.plan.lr, betas=(0.9, 0.99))
        self.ema = recipe.EMA(self.params, self.plan.ema_decay)
        self.session_pixels0 = self.pixels
        if resumed is not None:
            self.opt.load_state_dict(resumed["opt"])
            ema = dict(resumed["ema"])
            if "shadow" not in ema:          # a compact state: the shadow is ema_model's trainable part
                src = {"model": resumed["ema_model"], "le": resumed["ema_le"]}
                ema["shadow"] = [src[st][k].float() for st, k in trainable_names(self.plan.stage, self.m, self.le)]
            self.ema.load_state_dict(ema)
        train_rel, val_rel = data.split(data.manifest(Path(a.photos)))
        with data.threads(1):
            self.val = data.val_crops(data.load_photos(val_rel, Path(a.photos)), a.val_count, a.val_patch)
        # the patch of a batch queued ahead follows the progress at queueing
        # time (exact on CPU, where batches are made when asked for)
        self.source = batches.Source(Path(a.photos), train_rel, a.seed, a.stage, a.batch, self.patch_now, a.workers)
        if resumed is None:
            self.emit({"event": "start", **asdict(self.plan), "batch": a.batch, "patches": a.patch,
                       "released_init": a.released_init, "device": str(self.device), "threads": a.threads,
                       "workers": a.workers, "params_trained": sum(p.numel() for p in self.params),
                       "params_model": count_params(self.m), "train_photos": len(train_rel),
                       "val_photos": len(val_rel), "val_crops": a.val_count, "val_patch": a.val_patch})

    def patch_now(self, _i: int) -> int:
        return recipe.patch_at(self.plan.progress(self.pixels - self.pixels0), self.a.patch, self.a.patch_fractions)

    def finished(self) -> bool:
        return self.plan.progress(self.pixels - self.pixels0) >= 1.0

    def stop_here(self) -> bool:
        a = self.a
        if self.finished():
            return True
        return self.i >= a.iters if a.iters else self.session_seconds >= a.seconds

    # phase 3: the steps
    def step(self) -> dict[str, float]:
        plan, m, le = self.plan, self.m, self.le
        lr = plan.lr_at(self.pixels - self.pixels0, self.a.batch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        blur, sharp = self.batch()
        wait = time.perf_counter() - t0
        noise = None
        if plan.stage == 2:
            noise = torch.randn(blur.shape[0], contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS,
                                generator=self.noise_gen).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, terms, prior = losses(plan, m, le, blur, sharp, noise)
            if (self.i + 1) % self.a.log_every == 0:
                terms["prior_gain"] = prior_gain(plan, m, blur, sharp, prior)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if plan.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, plan.clip)
        self.opt.step()
        self.ema.update()
        self.i += 1
        self.pixels += blur.shape[0] * blur.shape[-1] * blur.shape[-2]
        return {**terms, "loss": float(loss.detach()), "lr": lr, "patch": blur.shape[-1], "wait": wait}

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch self.i on the device, in the model's memory format."""
        blur, sharp = self.source.get(self.i)
        return (blur.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt),
                sharp.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt))

    def warm(self, steps: int) -> None:
        """Forward + backward passes on the coming batch's shape that change
        nothing (no optimiser step, no EMA, own noise): a GPU selects its
        kernels for the shape here, outside the counted step time."""
        if steps <= 0:
            return
        t0 = time.perf_counter()
        blur, sharp = self.batch()
        gen = torch.Generator().manual_seed(12345)
        for _ in range(steps):
            noise = torch.randn(blur.shape[0], contract.PRIOR_TOKENS, contract.PRIOR_CHANNELS,
                                generator=gen).to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss, _, _ = losses(self.plan, self.m, self.le, blur, sharp, noise)
            loss.backward()
            self.opt.zero_grad(set_to_none=True)
        float(loss.detach())           # waits for the device
        self.emit({"event": "warm", "steps": steps, "patch": blur.shape[-1], "batch": blur.shape[0],
                   "seconds": round(time.perf_counter() - t0, 1)})

    def validate(self) -> dict[str, Any]:
        tv = time.perf_counter()
        raw = validate(self.plan.stage, self.m, self.le, self.val, self.device)
        self.ema.swap()
        ema = validate(self.plan.stage, self.m, self.le, self.val, self.device)
        self.ema.swap()
        return {"iter": self.i, "pixels": self.pixels, "seconds": round(self.elapsed, 1),
                **{f"val_{k}": round(v, 4) for k, v in raw.items()},
                **{f"val_ema_{k}": round(v, 4) for k, v in ema.items() if k != "blurry"},
                "val_seconds": round(time.perf_counter() - tv, 1)}

    def state(self) -> dict[str, Any]:
        self.ema.swap()
        ema_model, ema_le = {k: v.cpu().clone() for k, v in self.m.state_dict().items()}, \
            {k: v.cpu().clone() for k, v in self.le.state_dict().items()}
        self.ema.swap()
        return {"stage": self.plan.stage, "preset": self.plan.preset, "latent_bound": self.plan.latent_bound,
                "iteration": self.i,
                "elapsed": self.elapsed, "pixels": self.pixels, "schedule_from_pixels": self.pixels0, "model": self.m.state_dict(),
                "le": self.le.state_dict(), "ema_model": ema_model, "ema_le": ema_le,
                "plan": asdict(self.plan), "batch": self.a.batch, "opt": self.opt.state_dict(), "ema": self.ema.state_dict(),
                "rng": rng_state(self.noise_gen), "args": vars(self.a)}

    def loop(self) -> str:
        a = self.a
        stop = Stop()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        acc: dict[str, list[float]] = {}
        waited, t_mark, n, px_mark = 0.0, time.perf_counter(), 0, self.pixels
        while not self.stop_here():
            t0 = time.perf_counter()
            rec = self.step()
            dt = time.perf_counter() - t0
            self.elapsed += dt
            self.session_seconds += dt
            waited += rec.pop("wait")
            n += 1
            for k in ("loss", "img", "fft", "lat", "prior_gain"):
                if k in rec:
                    acc.setdefault(k, []).append(rec[k])
            end = self.stop_here() or stop.requested
            if self.i % a.log_every == 0 or end:
                now = time.perf_counter()
                self.emit({"iter": self.i, **{k: sum(v) / len(v) for k, v in acc.items()}, "lr": rec["lr"],
                           "patch": rec["patch"], "pixels": self.pixels, "seconds": round(self.elapsed, 1),
                           "s_per_iter": round((now - t_mark) / n, 3),
                           "data_wait": round(waited / max(now - t_mark, 1e-9), 3),
                           "tflops": round(self.flops_px * (self.pixels - px_mark) / max(now - t_mark, 1e-9) / 1e12, 4)})
                acc, waited, t_mark, n, px_mark = {}, 0.0, now, 0, self.pixels
            if a.val_every and (self.i % a.val_every == 0 or end):
                tv = time.perf_counter()
                self.emit(self.validate())
                t_mark += time.perf_counter() - tv
            if stop.requested or self.i % a.save_every == 0 or end:
                save_atomic(self.state(), self.ckpt_path)
            if stop.requested:
                return "signal"
        return "done" if self.finished() else "paused"

    def finish(self, how: str) -> None:
        """weights.pt at every stop (what --init and save_official read);
        in stage two also the official folder of the EMA weights."""
        self.source.close()
        if not self.ckpt_path.exists():
            return
        strip_checkpoint(self.ckpt_path, self.sdir / "weights.pt")
        px = self.pixels - self.session_pixels0
        sec = max(self.session_seconds, 1e-9)
        rec: dict[str, Any] = {"event": how, "iter": self.i, "seconds": round(self.elapsed, 1),
                               "pixels": self.pixels, "session_step_seconds": round(self.session_seconds, 1),
                               "session_pixels_per_s": round(px / sec), "session_tflops":
                               round(self.flops_px * px / sec / 1e12, 4)}
        if self.plan.stage == 2:
            rec["sha256"] = save_official(self.sdir / "weights.pt", Path(self.a.run) / "weights")
        self.emit(rec)


def run(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    t = Trainer(a)
    resumed = t.load()
    t.prepare(resumed)
    t.warm(a.warm_steps)
    how = "signal"
    try:
        how = t.loop()
    finally:
        t.finish(how if how != "signal" else "stopped")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", type=int, choices=(1, 2), required=True)
    ap.add_argument("--preset", default="s", choices=sorted(presets.PRESETS))
    ap.add_argument("--run", required=True, help="run folder; stage N lives in RUN/stageN")
    ap.add_argument("--total-mpx", type=float, default=0.0,
                    help="training megapixels the schedule spans (warm-up + cosine)")
    ap.add_argument("--iters", type=int, default=0, help="stop this invocation at iteration N (cumulative)")
    ap.add_argument("--seconds", type=float, default=0.0, help="stop this invocation after S seconds of steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, nargs="+", default=[64, 96, 128],
                    help="progressive patch sizes over the schedule's progress, equal shares (multiples of 16); "
                    "may differ between invocations (a GPU takes larger ones)")
    ap.add_argument("--patch-fractions", type=float, nargs="+", help="share of the schedule per patch size")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate at batch --lr-batch")
    ap.add_argument("--lr-batch", type=int, default=4, help="the batch --lr is for (sqrt scaling to --batch)")
    ap.add_argument("--warmup-mpx", type=float, default=0.0, help="megapixels of linear warm-up")
    ap.add_argument("--loss", default="l1", choices=recipe.LOSSES)
    ap.add_argument("--fft-weight", type=float, default=0.0, help="weight of the spectrum L1 term (0: off)")
    ap.add_argument("--latent-weight", type=float, default=1.0, help="stage 2: weight of L1(z_pred, z)")
    ap.add_argument("--latent-bound", choices=("released", "tanh"),
                    help="how the stage-one LE bounds z (default: the preset's; see Preset.latent_bound)")
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format (GPU convolutions)")
    ap.add_argument("--warm-steps", type=int, default=0,
                    help="uncounted forward+backward passes first (GPU kernel selection for the shape)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes making batches ahead (0: in the training process; a GPU wants ~1 per core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-every", type=int, default=500, help="0: no validation")
    ap.add_argument("--val-count", type=int, default=64, help="fixed validation crops")
    ap.add_argument("--val-patch", type=int, default=96)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--init", help="a new schedule from an earlier state or weights.pt (its EMA weights): "
                    "stage 1 takes its LE + Transformer; stage 2 a stage-one file (default RUN/stage1/ckpt.pt) "
                    "or a stage-two one to continue")
    ap.add_argument("--init-prior", help="stage 2 from a stage-one --init: LE_DM + denoiser from this "
                    "earlier stage-two file instead of LE's warm start and a fresh denoiser")
    ap.add_argument("--revive-latent", action="store_true",
                    help="with --init: re-initialise the 1/8 level (recipe.revive_latent_level)")
    ap.add_argument("--released-init", action="store_true",
                    help="a new run with PyTorch's default init (random FiLM and HIM projections), for A/B")
    ap.add_argument("--fresh-le", action="store_true",
                    help="stage 1 with --init: a new LE (e.g. when the latent bound changes) with the old Transformer")
    ap.add_argument("--resume-from", help="continue the schedule of this state (e.g. the repository's "
                    "compact state) when RUN/stageN/ckpt.pt does not exist yet")
    ap.add_argument("--photos", default=str(data.PHOTOS))
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if any(p % 16 for p in a.patch) or a.val_patch % 16:
        raise SystemExit("train: patch sizes must be multiples of 16")
    if (a.iters > 0) == (a.seconds > 0):
        raise SystemExit("train: give exactly one of --iters N or --seconds S (both > 0)")
    if a.total_mpx <= 0:
        raise SystemExit("train: --total-mpx T (> 0) is needed: the schedule's length in training megapixels")
    if a.warmup_mpx >= a.total_mpx:
        raise SystemExit(f"train: --warmup-mpx {a.warmup_mpx} must be below --total-mpx {a.total_mpx}")
    if a.patch_fractions and len(a.patch_fractions) != len(a.patch):
        raise SystemExit("train: --patch-fractions needs one share per --patch size")
    if a.init and a.resume_from:
        raise SystemExit("train: --init starts a new schedule, --resume-from continues one: give one")
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
