"""The learning curve of a chain of training runs: validation PSNR gain over
the blurry input against the training pixels seen, from the runs' logs.

    python3 -m engine_build.curve LOG.jsonl [LOG.jsonl ...] [--json FILE]

Give the logs in the order the runs continued each other. Logs from before
the `pixels` field (the first runs) have it reconstructed from their step
lines (iterations x batch x patch^2) and add up along the chain; newer logs
carry `pixels` from the start of their own chain, counted after the old ones.
Validation rows report the EMA model's gain where the log has one
(val_ema_model - val_blurry), else the raw model's (val_psnr -
val_psnr_blurry in the old logs). The validation crops changed with the
recipe (16 crops at 128 px, then 64 at 96 px), so compare gains within one
validation set; the `crops` column says which.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def points(logs: list[Path]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base = 0               # pixels seen in the old-format logs (new logs count from the chain's start)
    for log in logs:
        new_format = False
        batch, crops, last_iter, px = 0, "16x128", 0, 0
        for ln in log.read_text().splitlines():
            r = json.loads(ln)
            if r.get("event") in ("start", "resume"):
                batch = int(r.get("batch", batch))
                if "val_crops" in r:
                    crops = f"{r['val_crops']}x{r.get('val_patch', '?')}"
            if r.get("event") == "resume":
                last_iter = int(r["iter"])
            if "event" in r:
                continue
            if "pixels" in r:
                new_format = True
                px = int(r["pixels"])
            elif "patch" in r:
                px += (int(r["iter"]) - last_iter) * batch * int(r["patch"]) ** 2
            last_iter = int(r["iter"])
            if "val_ema_model" in r:  # new format
                gain, raw = r["val_ema_model"] - r["val_blurry"], r["val_model"] - r["val_blurry"]
                out.append({"log": str(log), "iter": r["iter"], "pixels": base + px, "gain_db": round(gain, 3),
                            "raw_gain_db": round(raw, 3), "crops": crops,
                            "gt_prior_gain_db": round(r["val_ema_gt_prior"] - r["val_blurry"], 3),
                            "prior_worth_db": round(r["val_ema_gt_prior"] - r["val_ema_gt_prior_shuffled"], 3)})
            elif "val_psnr" in r:
                out.append({"log": str(log), "iter": r["iter"], "pixels": base + px, "crops": crops,
                            "gain_db": round(r["val_psnr"] - r["val_psnr_blurry"], 3)})
        if not new_format:
            base += px
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m engine_build.curve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    pts = points([Path(p) for p in a.logs])
    if a.json:
        Path(a.json).write_text(json.dumps(pts, indent=1) + "\n")
    print("| log | iter | Mpixels seen | val gain (dB) | crops |")
    print("|---|---:|---:|---:|---|")
    for p in pts:
        print(f"| {p['log']} | {p['iter']} | {p['pixels'] / 1e6:.0f} | {p['gain_db']:+.2f} | {p['crops']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
