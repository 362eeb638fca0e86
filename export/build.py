"""Choosing, building and caching engines by name: ``eager``, ``torch`` or ``tensorrt``.

``eager`` runs the module as it is (the reference, always available); ``torch`` is the default
on a CUDA GPU (``torch_engine.py``); ``tensorrt`` needs the ``tensorrt`` extra. ``build_engines``
is what ``splatcast export`` calls: it builds every graph's engine into the cache with a
progress bar, checks each against the eager module on fresh random inputs and reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .cache import EngineCache
from .errors import EngineError
from .graphs import Engine, Graph, lrt_graph, synth_step_graph

ENGINES = ("eager", "torch", "tensorrt")


def default_engine() -> str:
    """``torch`` where a CUDA GPU is present, else ``eager``."""
    return "torch" if torch.cuda.is_available() else "eager"


@dataclass(frozen=True)
class EngineConfig:
    """Which engine runs the networks and how. ``fp8`` (torch engine, Ada/Hopper GPUs) runs the
    large Linear layers in FP8; ``cuda_graph`` replays each call as one CUDA graph; ``max_batch``
    bounds TensorRT's dynamic batch."""

    name: str = field(default_factory=default_engine)
    fp8: bool = False
    cuda_graph: bool = True
    max_batch: int = 16

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise EngineError(f"unknown engine {self.name!r}: choose one of {', '.join(ENGINES)}")


def load_engine(graph: Graph, config: EngineConfig, cache_dir: str | Path | None = None) -> Engine:
    """The engine ``config.name`` for ``graph``, loaded from ``cache_dir`` or built into it.

    Without ``cache_dir`` the torch engine compiles nothing ahead of time (FP16 + CUDA graph
    only); TensorRT always needs a cache folder for its engine file.
    """
    if config.name == "eager":
        return Engine(graph, graph.module, {"engine": "eager", "dtype": str(graph.dtype).removeprefix("torch.")}, static=False)
    cache = EngineCache(cache_dir) if cache_dir is not None else None
    if config.name == "torch":
        from .torch_engine import build_torch_engine

        return build_torch_engine(graph, cache, fp8=config.fp8, cuda_graph=config.cuda_graph)
    if cache is None:
        raise EngineError("the tensorrt engine needs a cache folder to keep its engine file in")
    from .tensorrt import build_tensorrt_engine

    return build_tensorrt_engine(graph, cache, max_batch=config.max_batch)


def check_engine(config: EngineConfig, device: torch.device | str) -> None:
    """Raise the error ``load_engine`` would (a missing package, no GPU, no FP8 tensor cores)
    without building anything, so a caller can refuse before minutes of other work."""
    if config.name == "torch":
        from .torch_engine import check_torch_engine

        check_torch_engine(device, fp8=config.fp8, cuda_graph=config.cuda_graph)
    elif config.name == "tensorrt":
        from .tensorrt import check_tensorrt

        check_tensorrt(device)


def pipeline_step_graph(pipeline, photos: int = 1) -> Graph:
    """The denoising step of a ``ReconstructionPipeline``'s synthesizer at its sizes, for
    ``photos`` photos per call (2 clips each: guidance's halves)."""
    synth = pipeline.synthesizer.config
    return synth_step_graph(pipeline.synthesizer.unet, batch=2 * photos, frames=synth.num_views, height=synth.resolution, width=synth.resolution)


def pipeline_lrt_graph(pipeline, photos: int = 1, prior_points: int | None = None) -> Graph:
    """The transformer of a ``ReconstructionPipeline`` for ``photos`` photos per call. The prior
    holds ``prior_points`` vertices, by default ``max_prior_tokens``, as it does for body models
    with at least that many (Anny, SMPL)."""
    return lrt_graph(pipeline.lrt, prior_points=prior_points or pipeline.config.max_prior_tokens, batch=photos)


def pipeline_graphs(pipeline, photos: int = 1) -> list[Graph]:
    """The denoising step and transformer graphs of a ``ReconstructionPipeline``: what
    ``splatcast export`` builds."""
    return [pipeline_step_graph(pipeline, photos), pipeline_lrt_graph(pipeline, photos)]


class EnginePerShape:
    """One network run through ``config``'s engines: one per set of input shapes, loaded from
    ``cache_dir`` (or built into it) the first time those shapes come.

    Why one per shape instead of falling back to eager for shapes an engine was not built for:
    the static engines (torch: AOTInductor + CUDA graph) fit only their build's shapes, and a
    different photo count or prior size is a legitimate call that should get the engine's speed
    too. The cache keys on shapes, so each size compiles once per machine, and later starts load
    it. The cost is one engine's memory per size in use; the pipeline's callers (the CLI, the
    server) always reconstruct one photo at a time, so in practice that is one engine.
    ``graph_for(*inputs)`` gives the graph of the network at the inputs' shapes.
    """

    def __init__(self, graph_for: Callable[..., Graph], config: EngineConfig, cache_dir: str | Path | None = None):
        self.graph_for = graph_for
        self.config = config
        self.cache_dir = cache_dir
        self.engines: dict[tuple[tuple[int, ...], ...], Engine] = {}

    def __call__(self, *inputs: torch.Tensor):
        shapes = tuple(tuple(x.shape) for x in inputs)
        if shapes not in self.engines:
            self.engines[shapes] = load_engine(self.graph_for(*inputs), self.config, self.cache_dir)
        return self.engines[shapes](*inputs)


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """||output - reference|| / ||reference|| in float64 (inf when output has NaN or inf)."""
    output, reference = output.double(), reference.double()
    if not torch.isfinite(output).all():
        return float("inf")
    return ((output - reference).norm() / reference.norm()).item()


@dataclass(frozen=True)
class EngineBuild:
    """One graph's line in the report: what was built or loaded, how long it took, how close
    its output came to the eager module's on fresh random inputs."""

    graph: str
    engine: str
    built: bool
    seconds: float
    relative_error: float
    info: dict


def build_engines(config: EngineConfig, cache_dir: str | Path, graphs: Sequence[Graph], progress: bool = True) -> list[EngineBuild]:
    """Build (or load) ``config``'s engine for every graph into ``cache_dir``, one progress line
    each, and check each against its eager module. Returns one ``EngineBuild`` per graph."""
    report = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        for graph in graphs:
            task = bar.add_task(f"{config.name} engine for {graph.name}", total=1)
            start = time.perf_counter()
            engine = load_engine(graph, config, cache_dir)
            seconds = time.perf_counter() - start
            inputs = tuple(graph.random_inputs().values())
            with torch.inference_mode():
                reference = graph.module(*inputs)
            error = relative_error(engine(*inputs), reference)
            built = engine.info.get("built", False)
            bar.update(task, completed=1, description=f"{config.name} engine for {graph.name}: {'built' if built else 'loaded'}, error {error:.2e}")
            report.append(EngineBuild(graph.name, config.name, built, round(seconds, 3), error, engine.info))
            del engine
    return report
