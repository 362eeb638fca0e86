"""What every cached engine start pays before it can look its engine up: the weights digest of
SV3D_p's full UNet (1.5 B parameters, FP32, random weights), on this machine's CPUs. The cache's
per-entry digests on a thread pool, with one thread and with all, beside the single SHA-256
stream over copied bytes that they replaced. Run:

    python -m pytest benchmarks/test_cache_cpu.py --benchmark-json=benchmarks/results/cpu-weights-digest.json
"""

import hashlib

import pytest
import torch

from splatcast.config import usable_cpu_count
from splatcast.engine.synth import SV3DUNet
from splatcast.export import cache

VIEWS = 21


@pytest.fixture(scope="module")
def unet() -> SV3DUNet:
    torch.manual_seed(0)
    return SV3DUNet(num_frames=VIEWS).eval()


def one_stream_digest(module: torch.nn.Module) -> str:
    """The digest as it was: one SHA-256 stream, each entry's bytes copied out with ``tobytes``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_one_stream_digest(benchmark, unet):
    benchmark.pedantic(one_stream_digest, args=(unet,), rounds=3, warmup_rounds=1)
    benchmark.extra_info["parameters"] = sum(p.numel() for p in unet.parameters())


@pytest.mark.parametrize("threads", [1, usable_cpu_count()], ids=lambda n: f"threads={n}")
def test_state_dict_digest(benchmark, unet, threads, monkeypatch):
    monkeypatch.setattr(cache, "usable_cpu_count", lambda: threads)
    benchmark.pedantic(cache.state_dict_digest, args=(unet,), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update({"threads": threads, "parameters": sum(p.numel() for p in unet.parameters())})
