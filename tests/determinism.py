"""Deterministic learning tests: one fixed thread, deterministic kernels, every seed set.

A training test must give the same numbers on a quiet machine and on two cores shared with
other jobs: its result may depend on the code, never on the load.  Torch's CPU kernels split
their float sums by thread, so the thread count is pinned (1: as the CLI runs under
``OMP_NUM_THREADS=1``); ``torch.use_deterministic_algorithms`` makes any op without a
deterministic implementation warn; Python's, NumPy's and Torch's global generators are
seeded (the trainers draw their batches from their own ``(seed, rank, step)`` streams).

Use it in a test module (module scope, so it covers the module's fixtures that train)::

    from determinism import deterministic_torch  # noqa: F401  (autouse fixture)
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytest
import torch

THREADS = 1
SEED = 0


@contextmanager
def deterministic(seed: int = SEED, threads: int = THREADS) -> Iterator[None]:
    """Pin the thread count, make kernels deterministic and seed every global generator; restored afterwards."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


@pytest.fixture(scope="module", autouse=True)
def deterministic_torch() -> Iterator[None]:
    with deterministic():
        yield


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the module's models (what a studio's CPU worker runs), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)
