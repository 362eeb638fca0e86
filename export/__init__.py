"""Optimized inference engines for the reconstruction networks: ONNX graphs, TensorRT FP16
engines, and PyTorch's own (FP16, AOTInductor, CUDA graphs, optional FP8), with an engine cache.

Engines are chosen by name (``eager``, ``torch``, ``tensorrt``; see ``build.py``); the eager
module is always available as the reference. TensorRT and torch-tensorrt are optional
(``pip install 'splatcast[tensorrt]'``) and imported only when used.
"""

from .build import (
    ENGINES,
    EngineBuild,
    EngineConfig,
    EnginePerShape,
    build_engines,
    check_engine,
    default_engine,
    load_engine,
)
from .cache import EngineCache, EngineKey
from .errors import (
    EngineError,
    EngineInputError,
    EngineUnavailableError,
    MissingDependencyError,
)
from .graphs import Engine, Graph, lrt_graph, synth_step_graph

__all__ = [
    "ENGINES",
    "Engine",
    "EngineBuild",
    "EngineCache",
    "EngineConfig",
    "EngineError",
    "EngineInputError",
    "EngineKey",
    "EnginePerShape",
    "EngineUnavailableError",
    "Graph",
    "MissingDependencyError",
    "build_engines",
    "check_engine",
    "default_engine",
    "load_engine",
    "lrt_graph",
    "synth_step_graph",
]
