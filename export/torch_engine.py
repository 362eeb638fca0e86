"""The default engine on any CUDA GPU: PyTorch's own compiler and CUDA graphs, no extra packages.

Built from a ``Graph`` in four steps, each of which can be switched off to measure it:
1. FP16 weights and activations (``Graph.to``); attention already runs through the fused
   ``F.scaled_dot_product_attention`` (diffusers' ``AttnProcessor2_0``, the default; flash
   attention on Hopper in FP16).
2. Optionally FP8 for the large Linear layers (``fp8.py``).
3. Ahead-of-time compilation with AOTInductor at the graph's static shapes (classifier-free
   guidance's two halves are one batch of the graph), packaged as a ``.pt2`` file in the engine
   cache: the first start compiles (minutes for the full UNet), later starts load the package.
   A new package is loaded and run once in a child process before it is trusted: on some
   torch builds loading one crashes the process (seen on a GPU image with torch 2.11), and a
   crash there must cost a warning, not the server. A package that fails that check is not
   kept; the cache entry records the refusal instead (so the next start does not spend minutes
   compiling it again), and the engine compiles the graph just in time with ``torch.compile``
   instead, its Inductor artifacts (generated kernels, autotuning results) kept in a cache
   entry of their own so that later starts skip code generation and autotuning. Before the
   minutes a large graph takes, a tiny package is built and checked (seconds, once per cache,
   torch and GPU): where even that one is refused, the large one is not compiled at all.
4. CUDA-graph capture of the whole call, replayed on every step: one launch instead of
   thousands, inputs copied into the captured buffers.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from .cache import CacheEntry, EngineCache, EngineKey, state_dict_digest
from .errors import EngineError, EngineUnavailableError
from .fp8 import MIN_FEATURES, check_fp8_support, quantize_linears
from .graphs import Engine, Graph

logger = logging.getLogger(__name__)

PACKAGE = "model.pt2"
REFUSED = "refused.json"
"""Written instead of the package when the built package failed its out-of-process check."""
INDUCTOR_ARTIFACTS = "inductor-artifacts.bin"
"""``torch.compiler.save_cache_artifacts``'s bytes: what a later start loads before compiling."""
PROBE_TIMEOUT_S = 600
_PROBE = """
import json, sys, torch
runner = torch._inductor.aoti_load_package(sys.argv[1])
inputs = [torch.zeros(shape, dtype=getattr(torch, dtype), device=device) for shape, dtype, device in json.loads(sys.argv[2])]
with torch.no_grad():
    runner(*inputs)
if torch.cuda.is_available():
    torch.cuda.synchronize()
"""


class ProbeFailure(NamedTuple):
    reason: str
    lasting: bool
    """A crash or an error that will recur; not a timeout or the GPU out of memory, which may
    not happen on the next start."""


class PackageCheckError(EngineError):
    """A new package failed its check in a way that may not recur: it is not kept, nothing is
    recorded, and the next start builds and checks it again."""


def probe_package(package: Path, graph: Graph) -> ProbeFailure | None:
    """Load ``package`` and run it once on zero inputs of ``graph``'s shapes in a child process.
    None if that worked, else why not (exit status or signal, and the end of its stderr)."""
    spec = [(list(x.shape), str(x.dtype).removeprefix("torch."), str(x.device)) for x in graph.inputs.values()]
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE, str(package), json.dumps(spec)], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return ProbeFailure(f"loading and running the package took over {PROBE_TIMEOUT_S} s", lasting=False)
    if child.returncode == 0:
        return None
    status = f"signal {-child.returncode}" if child.returncode < 0 else f"exit status {child.returncode}"
    reason = f"loading and running the package failed in a child process ({status}): {child.stderr.strip()[-500:]}"
    return ProbeFailure(reason, lasting="OutOfMemoryError" not in child.stderr)


def aot_compile(graph: Graph, folder: Path) -> None:
    """torch.export the graph at its example shapes and compile it with AOTInductor into
    ``folder``; keep the package only if a child process can load and run it. A lasting
    failure is recorded instead (``REFUSED``); another raises ``PackageCheckError``."""
    with torch.no_grad():
        program = torch.export.export(graph.module, tuple(graph.inputs.values()))
        torch._inductor.aoti_compile_and_package(program, package_path=str(folder / PACKAGE))
    failure = probe_package(folder / PACKAGE, graph)
    if failure is None:
        return
    (folder / PACKAGE).unlink()
    if not failure.lasting:
        raise PackageCheckError(failure.reason)
    (folder / REFUSED).write_text(json.dumps({"reason": failure.reason, "torch": torch.__version__}))


def probe_graph(device: torch.device, dtype: torch.dtype) -> Graph:
    """A one-layer graph whose package shows in seconds whether packages load here at all."""
    module = torch.nn.Linear(16, 16).to(device, dtype).eval()
    return Graph("aoti-probe", module, {"x": torch.zeros(4, 16, device=device, dtype=dtype)}, {"x": 0}, ("y",))


def refusal_of(entry: CacheEntry) -> str | None:
    """The reason recorded in a cache entry whose package was refused, or None."""
    return json.loads(entry.file(REFUSED).read_text())["reason"] if entry.file(REFUSED).exists() else None


def build_package(graph: Graph, cache: EngineCache, folder: Path) -> None:
    """``aot_compile`` into ``folder``, unless this torch refuses even a tiny package (built and
    checked once per cache): then that refusal is recorded for ``graph`` too."""
    probe = probe_graph(graph.device, graph.dtype)
    probe_entry, _ = cache.get_or_build(EngineKey.for_graph(probe, "torch-aoti", "probe"), lambda f: aot_compile(probe, f))
    refusal = refusal_of(probe_entry)
    if refusal is None:
        aot_compile(graph, folder)
    else:
        (folder / REFUSED).write_text(json.dumps({"reason": f"a one-layer package was refused: {refusal}", "torch": torch.__version__}))


def compile_with_cached_artifacts(graph: Graph, cache: EngineCache, key: EngineKey) -> tuple[Callable, bool]:
    """``torch.compile`` of ``graph.module`` and whether this call compiled it from scratch.

    The first time, the graph is compiled and run once at its shapes, and the Inductor artifacts
    go to the cache; later, they are loaded first, so that compiling finds its kernels and
    autotuning results instead of regenerating them (Dynamo still traces the module).
    """
    compiled = torch.compile(graph.module, dynamic=False)

    def build(folder: Path) -> None:
        with torch.no_grad():
            compiled(*graph.inputs.values())
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            raise EngineError(f"{graph.name}: torch.compile left no artifacts to cache")
        (folder / INDUCTOR_ARTIFACTS).write_bytes(saved[0])

    entry, built = cache.get_or_build(key, build)
    if not built:
        torch.compiler.load_cache_artifacts(entry.file(INDUCTOR_ARTIFACTS).read_bytes())
        with torch.no_grad():  # compile now, not on the first request
            compiled(*graph.inputs.values())
    return compiled, built


class CUDAGraphCall:
    """A callable captured once into a CUDA graph and replayed.

    Inputs are copied into the buffers the graph was captured with; the output is a fresh copy
    of the captured output buffer (a few MB; samplers may keep outputs across steps).
    """

    def __init__(self, fn: Callable, example_inputs: tuple[torch.Tensor, ...], warmup: int = 2):
        self.inputs = tuple(x.clone() for x in example_inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):  # cuBLAS handles, autotuning and allocator pools settle first
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor):
        for static, x in zip(self.inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        if isinstance(self.outputs, torch.Tensor):
            return self.outputs.clone()
        return tuple(out.clone() for out in self.outputs)


def check_torch_engine(device: torch.device | str, *, fp8: bool = False, cuda_graph: bool = True) -> None:
    """Raise EngineUnavailableError if the torch engine with these options cannot run on ``device``:
    CUDA graphs and FP8 need a CUDA GPU (FP8 one with FP8 tensor cores)."""
    if torch.device(device).type != "cuda" and (cuda_graph or fp8):
        raise EngineUnavailableError("the torch engine's CUDA graphs and FP8 need a CUDA GPU; use the 'eager' engine on the CPU")
    if fp8:
        check_fp8_support(device)


def build_torch_engine(
    graph: Graph,
    cache: EngineCache | None = None,
    *,
    dtype: torch.dtype = torch.float16,
    fp8: bool = False,
    fp8_min_features: int = MIN_FEATURES,
    cuda_graph: bool = True,
    weights: str | None = None,
) -> Engine:
    """The PyTorch engine for ``graph`` on the graph's device.

    With a ``cache`` the graph is compiled ahead of time (AOTInductor) into it, or loaded from
    it (or, where such packages are refused here, compiled with ``torch.compile`` and its
    artifacts cached); without one it runs eagerly in ``dtype`` (and FP8), captured in a CUDA graph.
    ``fp8`` runs Linear layers at least ``fp8_min_features`` wide in FP8 (``fp8.py``).
    ``weights`` identifies the model's weights in the cache key (a checkpoint digest, say);
    by default the module's state dict is hashed. CUDA graphs and FP8 need a CUDA device.
    """
    device = graph.device
    check_torch_engine(device, fp8=fp8, cuda_graph=cuda_graph)
    aot = cache is not None
    info: dict = {"engine": "torch", "dtype": str(dtype).removeprefix("torch."), "fp8": fp8, "aot": aot, "compiled": False, "cuda_graph": cuda_graph}
    start = time.perf_counter()
    if aot:
        weights = weights or state_dict_digest(graph.module)
        info["weights_digest_s"] = round(time.perf_counter() - start, 3)
    typed = graph.to(dtype=dtype)
    if fp8:
        info["fp8_layers"] = len(quantize_linears(typed.module, fp8_min_features))
    run: Callable = typed.module
    if aot:
        key = EngineKey.for_graph(typed, "torch-aoti", weights, fp8=fp8 and fp8_min_features)
        lookup = time.perf_counter()
        try:
            entry, info["built"] = cache.get_or_build(key, lambda folder: build_package(typed, cache, folder))
            refusal = refusal_of(entry)
        except PackageCheckError as error:
            entry, info["built"], refusal = None, True, f"{error} (checked again on the next start)"
        info["cache_s"] = round(time.perf_counter() - lookup, 3)
        if refusal is not None:
            info["aot"], info["aot_refused"] = False, refusal
            logger.warning("%s: AOTInductor package refused, compiling with torch.compile instead: %s", graph.name, refusal)
            compile_key = EngineKey.for_graph(typed, "torch-compile", weights, fp8=fp8 and fp8_min_features)
            run, compiled_now = compile_with_cached_artifacts(typed, cache, compile_key)
            info["compiled"], info["built"] = True, info["built"] or compiled_now
        else:
            load = time.perf_counter()
            run = torch._inductor.aoti_load_package(str(entry.file(PACKAGE)))
            info["load_s"] = round(time.perf_counter() - load, 3)
    info["prepare_s"] = round(time.perf_counter() - start, 3)
    if cuda_graph:
        start = time.perf_counter()
        run = CUDAGraphCall(run, tuple(typed.inputs.values()))
        info["capture_s"] = round(time.perf_counter() - start, 3)
    if info["aot"]:  # the package holds the weights now: free the module's copy, keep its shapes
        typed.module.to("meta")
    return Engine(typed, run, info)

