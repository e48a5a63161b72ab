"""Test session setup: one torch thread per xdist worker, so workers share the cores."""

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
