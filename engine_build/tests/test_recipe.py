"""The recipe's parts: initialisations that let the prior in, EMA, losses,
and the ablation command that checks them on a trained model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine_build import ablate, presets, recipe, train


def _model() -> train.HIDiff:
    m, _ = train.fresh_modules(presets.get("s"), 0)
    return m.eval()


def test_film_identity_makes_the_modulation_the_identity_with_live_gradients() -> None:
    m = _model()
    pairs = recipe.film_layers(m.transformer)
    assert len(pairs) == 2 * len(m.transformer.latent.blocks)     # attention + FFN of each latent block
    x = torch.rand(2, 128, 4, 4)
    p = torch.randn(2, 256)
    ln1, ln2 = pairs[0]
    k1, k2 = ln1(p)[..., None, None], ln2(p)[..., None, None]
    assert torch.equal(x * k1 + k2, x)                             # any prior: identity
    (x * ln1(p)[..., None, None] + ln2(p)[..., None, None]).pow(2).sum().backward()
    assert float(ln1.weight.grad.abs().sum()) > 0                  # but not shut: gradients flow


def test_fresh_hims_start_as_identity() -> None:
    m = _model()
    him = m.transformer.encoder_level1.him
    x = torch.rand(1, 16, 8, 8)
    assert torch.equal(him(x, torch.randn(1, 16, 256)), x)


def test_revive_latent_level_keeps_the_function_and_revives_the_level() -> None:
    torch.manual_seed(3)
    m, _ = train.stage_modules(presets.get("s"), 1)              # released init: FiLM random
    m.eval()
    blur, prior = torch.rand(1, 3, 32, 32), torch.rand(1, 16, 256)
    with torch.no_grad():
        with ablate.bypassed(m, "latent"):
            without = m.transformer(blur, prior)
        assert recipe.revive_latent_level(m.transformer, 0) == len(m.transformer.latent.blocks)
        revived = m.transformer(blur, prior)
    assert torch.allclose(revived, without, atol=1e-6)            # adds nothing at first...
    revived = m.transformer(blur, prior)
    revived.sum().backward()
    assert float(m.transformer.latent.blocks[0].ffn.project_out.weight.grad.abs().sum()) > 0   # ...but learns


def test_ema_tracks_and_swaps() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    ema = recipe.EMA([p], decay=0.5)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()                     # first update: decay (1+0)/(10+0) = 0.1
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.9))
    ema.swap()
    assert torch.allclose(p.detach(), torch.full((3,), 0.9))
    ema.swap()
    assert torch.equal(p.detach(), torch.ones(3))
    st = ema.state_dict()
    other = recipe.EMA([torch.nn.Parameter(torch.zeros(3))], 0.5)
    other.load_state_dict(st)
    assert torch.equal(other.shadow[0], ema.shadow[0]) and other.updates == 1


def test_losses() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = torch.full((2, 3, 8, 8), 0.1)
    assert float(recipe.image_loss(a, b, "l1")) == pytest.approx(0.1)
    assert float(recipe.image_loss(a, b, "charbonnier")) == pytest.approx(0.1, rel=1e-3)
    assert float(recipe.image_loss(a, b, "psnr")) == pytest.approx(-20.0, abs=1e-3)   # minus PSNR
    assert float(recipe.fft_loss(a, a)) == 0.0 and float(recipe.fft_loss(a, b)) > 0
    with pytest.raises(ValueError, match="loss 'l2'"):
        recipe.image_loss(a, b, "l2")


def test_ablate_on_pairs(tmp_path: Path) -> None:
    """The command runs end to end on a pairs folder and a state; a
    bypassed level changes the output, so its row differs."""
    rng = np.random.default_rng(0)
    for sub in ("blur", "sharp"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    for n in ("a.png", "b.png"):
        img = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "pairs" / "sharp" / n)
        Image.fromarray(np.roll(img, 1, 1)).save(tmp_path / "pairs" / "blur" / n)
    m, le = train.stage_modules(presets.get("s"), 0)
    state = tmp_path / "w.pt"
    torch.save({"stage": 2, "preset": "s", "iteration": 0, "model": m.state_dict(), "le": le.state_dict()}, state)
    out = tmp_path / "ab.json"
    assert ablate.main(["--pairs", str(tmp_path / "pairs"), "--state", str(state), "--json", str(out),
                        "--threads", "1"]) == 0
    res = json.loads(out.read_text())
    assert res["images"] == 2
    rows = res["psnr_db"]
    assert {"generated", "other_prior", "mean_prior", "gt_prior", "gt_prior_shuffled",
            *(f"bypass_{lv}" for lv in ablate.LEVELS)} <= set(rows)
    assert rows["bypass_refinement"] != rows["generated"]
    assert res["delta_db"]["other_prior"] == pytest.approx(rows["other_prior"] - rows["generated"])


def test_curve_adds_old_runs_before_new_ones(tmp_path: Path) -> None:
    """Old logs (no pixels field) are reconstructed from their step lines
    and add up; a new log's pixels count after them."""
    from engine_build import curve
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join(json.dumps(r) for r in [
        {"event": "start", "batch": 2},
        {"iter": 10, "loss": 1.0, "patch": 32},
        {"iter": 10, "val_psnr": 21.0, "val_psnr_blurry": 20.0},
        {"iter": 20, "loss": 1.0, "patch": 64}]) + "\n")
    new = tmp_path / "new.jsonl"
    new.write_text("\n".join(json.dumps(r) for r in [
        {"event": "start", "batch": 4, "val_crops": 64, "val_patch": 96},
        {"iter": 5, "pixels": 1000, "patch": 16},
        {"iter": 5, "pixels": 1000, "val_blurry": 20.0, "val_model": 20.5, "val_ema_model": 21.5,
         "val_ema_gt_prior": 22.0, "val_ema_gt_prior_shuffled": 21.25}]) + "\n")
    pts = curve.points([old, new])
    old_px = 10 * 2 * 32 * 32 + 10 * 2 * 64 * 64
    assert [p["pixels"] for p in pts] == [10 * 2 * 32 * 32, old_px + 1000]
    assert pts[0]["gain_db"] == 1.0 and pts[1]["gain_db"] == 1.5 and pts[1]["raw_gain_db"] == 0.5
    assert pts[1]["prior_worth_db"] == 0.75 and pts[1]["crops"] == "64x96"
