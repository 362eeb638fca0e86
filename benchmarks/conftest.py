"""Benchmark reports carry the device they ran on (pytest-benchmark adds date, commit, CPU)."""

import platform

import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["cpu_threads"] = torch.get_num_threads()
    machine_info["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
