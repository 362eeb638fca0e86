"""Markers, for tests/ and benchmarks/ alike: ``gpu`` ones skip without CUDA; ``slow`` ones
run only with ``--run-slow``."""

import pytest
import torch

import splatcast  # noqa: F401  (first: keeps the source tree behind site-packages; see its __init__)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
