"""The engine cache: hits, misses, and corrupt, mismatched or stale entries rebuilt, never loaded.

The entries hold real artifacts: a small module's weights and its exported program, written
and read back by torch.
"""

import json
from dataclasses import replace

import pytest
import torch
from splatcast.export import cache as cache_module
from splatcast.export.cache import MANIFEST, EngineCache, EngineKey, state_dict_digest
from splatcast.export.graphs import Graph


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    return Graph("mlp", module, {"x": torch.zeros(2, 8)}, {"x": 0}, ("y",))


@pytest.fixture
def cache(tmp_path):
    return EngineCache(tmp_path / "engines")


class Builder:
    """Exports the graph into the entry folder and counts how often it had to."""

    def __init__(self, graph):
        self.graph, self.calls = graph, 0

    def __call__(self, folder):
        self.calls += 1
        torch.save(self.graph.module.state_dict(), folder / "weights.pt")
        (folder / "program").mkdir()
        (folder / "program" / "signature.json").write_text(json.dumps(self.graph.signature()))


def key_for(graph, **changes):
    return replace(EngineKey.for_graph(graph, "test", state_dict_digest(graph.module)), **changes)


def check_runs(entry, graph):
    module = Graph.to(graph).module
    module.load_state_dict(torch.load(entry.file("weights.pt"), weights_only=True))
    x = torch.randn(2, 8)
    torch.testing.assert_close(module(x), graph.module(x), rtol=0, atol=0)


def test_second_lookup_hits_and_loads(graph, cache):
    build = Builder(graph)
    entry, built = cache.get_or_build(key_for(graph), build)
    assert built and build.calls == 1
    manifest = json.loads((entry.path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"weights.pt", "program/signature.json"}
    again, built = cache.get_or_build(key_for(graph), build)
    assert not built and build.calls == 1 and again.path == entry.path
    check_runs(again, graph)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete", "extra_byte"])
def test_corrupt_artifact_is_rebuilt(graph, cache, damage):
    build = Builder(graph)
    entry, _ = cache.get_or_build(key_for(graph), build)
    weights = entry.file("weights.pt")
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # same size: only the checksum can tell
        data[len(data) // 3] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    else:
        weights.write_bytes(bytes(data) + b"\0")
    assert cache.lookup(key_for(graph)) is None, "a damaged entry must never be returned"
    assert not entry.path.exists(), "and it is removed"
    rebuilt, built = cache.get_or_build(key_for(graph), build)
    assert built and build.calls == 2
    check_runs(rebuilt, graph)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["key"].update(torch_version="0.0.1"),  # written by another torch
        lambda m: m["key"].update(weights="0" * 64),  # other weights
        lambda m: m.update(format=0),  # an older cache layout
        lambda m: m["files"].clear(),
        lambda m: m["files"]["program/signature.json"].update(sha256="0" * 64),
    ],
    ids=["torch-version", "weights", "format", "no-files", "checksum"],
)
def test_mismatched_manifest_is_rebuilt(graph, cache, edit):
    build = Builder(graph)
    entry, _ = cache.get_or_build(key_for(graph), build)
    manifest = json.loads((entry.path / MANIFEST).read_text())
    edit(manifest)
    (entry.path / MANIFEST).write_text(json.dumps(manifest))
    assert cache.lookup(key_for(graph)) is None
    _, built = cache.get_or_build(key_for(graph), build)
    assert built and build.calls == 2


def test_unreadable_manifest_is_rebuilt(graph, cache):
    build = Builder(graph)
    entry, _ = cache.get_or_build(key_for(graph), build)
    (entry.path / MANIFEST).write_text("{not json")
    _, built = cache.get_or_build(key_for(graph), build)
    assert built and build.calls == 2


@pytest.mark.parametrize(
    "changes",
    [
        {"splatcast_version": "99.0"},
        {"torch_version": "1.0"},
        {"cuda_version": "11.8"},
        {"device": "NVIDIA H100 80GB HBM3", "capability": "9.0"},
        {"dtype": "float16"},
        {"shapes": (("x", (4, 8), "float32"),)},
        {"options": (("fp8", "True"),)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_key_field_separates_entries(graph, cache, changes):
    build = Builder(graph)
    first, _ = cache.get_or_build(key_for(graph), build)
    other, built = cache.get_or_build(key_for(graph, **changes), build)
    assert built and other.path != first.path, "a stale entry (another version, GPU, precision, shape) is never reused"


def test_weights_digest_follows_every_weight(graph):
    digest = state_dict_digest(graph.module)
    assert digest == state_dict_digest(graph.module)
    changed = Graph.to(graph).module
    with torch.no_grad():
        changed[2].bias[1] += 1e-6
    assert state_dict_digest(changed) != digest
    assert state_dict_digest(changed.half()) != digest, "dtype is part of the digest"


def test_weights_digest_does_not_depend_on_the_thread_count(graph, monkeypatch):
    digest = state_dict_digest(graph.module)
    monkeypatch.setattr(cache_module, "usable_cpu_count", lambda: 1)
    assert state_dict_digest(graph.module) == digest


def test_failed_build_leaves_nothing(graph, cache):
    def broken(folder):
        (folder / "partial.bin").write_bytes(b"half an engine")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        cache.get_or_build(key_for(graph), broken)
    assert cache.lookup(key_for(graph)) is None
    assert [p.name for p in cache.root.iterdir() if not p.name.endswith(".lock")] == []
