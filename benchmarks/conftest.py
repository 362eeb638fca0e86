"""Benchmark reports carry the device they ran on (pytest-benchmark adds date, commit, CPU)."""

import os
import platform

import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["cpu_threads"] = torch.get_num_threads()
    # The GPU machine gets a copy of the tree without git: the run names its commit instead.
    if "SPLATCAST_COMMIT" in os.environ:
        machine_info["splatcast_commit"] = os.environ["SPLATCAST_COMMIT"]
    machine_info["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
