"""Training batches: batch i is a pure function of (seed, stage, i).

Why per-iteration generators instead of one running generator: a batch can
then be made anywhere, in any order, by any process. On a GPU the blur
synthesis (trajectory kernels, FFT convolution, JPEG round trip) on one CPU
core is ten times slower than the training step, so batches are made ahead
by a pool of worker processes; on a CPU they are made in-process. Both give
the same batches, and resuming needs no data-generator state.
"""
from __future__ import annotations

import multiprocessing as mp
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import data

Batch = tuple[torch.Tensor, torch.Tensor]

_photos: list[np.ndarray] = []          # a worker's own copy, read from disk at its start


def make(photos: list[np.ndarray], seed: int, stage: int, i: int, batch: int, patch: int) -> Batch:
    """(blur, sharp) [batch,3,patch,patch] for iteration i."""
    with data.threads(1):
        return data.random_batch(photos, batch, patch, np.random.default_rng([seed, stage, i]))


def _worker_init(root: str, rel: list[str]) -> None:
    global _photos
    torch.set_num_threads(1)
    _photos = data.load_photos(rel, Path(root))


def _worker_make(seed: int, stage: int, i: int, batch: int, patch: int) -> Batch:
    return make(_photos, seed, stage, i, batch, patch)


class Source:
    """Hands out batch i, asked for in order i, i+1, ...; with workers > 0
    keeps `ahead` future batches in flight. `patch_for(i)` is asked when a batch is queued (in a time-budget
    run the patch size of a future iteration is only a forecast)."""

    def __init__(self, root: Path, rel: list[str], seed: int, stage: int, batch: int,
                 patch_for: Callable[[int], int], workers: int = 0, ahead: int = 0) -> None:
        self.seed, self.stage, self.batch = seed, stage, batch
        self.patch_for = patch_for
        self.ahead = ahead or 2 * workers
        self.pending: dict[int, AsyncResult[Batch]] = {}
        self.photos: list[np.ndarray] = []
        self.pool = None
        if workers:
            # spawn, not fork: a child forked from a process whose OpenMP/BLAS
            # threads hold a lock hangs on its first parallel op (seen here).
            # Each worker reads the photos itself (~200 MB, seconds).
            self.pool = mp.get_context("spawn").Pool(workers, _worker_init, (str(root), rel))
        else:
            self.photos = data.load_photos(rel, root)

    def get(self, i: int) -> Batch:
        if self.pool is None:
            return make(self.photos, self.seed, self.stage, i, self.batch, self.patch_for(i))
        for j in range(i, i + self.ahead + 1):
            if j not in self.pending:
                self.pending[j] = self.pool.apply_async(
                    _worker_make, (self.seed, self.stage, j, self.batch, self.patch_for(j)))
        return self.pending.pop(i).get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
