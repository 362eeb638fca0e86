"""Prometheus metrics of one server (``GET /metrics``), on a registry of its own so that several
servers in one process (tests) never share series.

Per-session series are read from the live sessions at scrape time, so a closed session's series
disappear with it; stage times and bad messages are recorded as they happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# Frame stage times: 0.25 ms to 1 s.
_STAGE_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.133, 0.25, 0.5, 1.0)
_LATENCY_BUCKETS = (0.002, 0.004, 0.008, 0.012, 0.016, 0.020, 0.025, 0.033, 0.05, 0.066, 0.1, 0.133, 0.25, 0.5, 1.0)
"""Finer around 20 ms, the server's p99 target, which a pose waiting one 60 fps slot nears."""


class _SessionCollector(Collector):
    def __init__(self, live_tracks: Callable[[], Iterable[tuple[str, object]]]) -> None:
        self._live_tracks = live_tracks

    def collect(self):
        tracks = list(self._live_tracks())
        sessions = GaugeMetricFamily("splatcast_sessions", "Live streaming sessions")
        sessions.add_metric([], len(tracks))
        frames = CounterMetricFamily("splatcast_frames", "Encoded frames sent", labels=["session"])
        skipped = CounterMetricFamily("splatcast_frames_skipped", "Frame slots skipped: the previous frame was not yet sent", labels=["session"])
        fps = GaugeMetricFamily("splatcast_session_fps", "Frames delivered in the last second", labels=["session"])
        for session_id, track in tracks:
            frames.add_metric([session_id], track.frames_sent)
            skipped.add_metric([session_id], track.frames_skipped)
            fps.add_metric([session_id], track.delivered_fps())
        yield from (sessions, frames, skipped, fps)


class StreamMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, live_tracks: Callable[[], Iterable[tuple[str, object]]]) -> None:
        """``live_tracks`` lists (session id, track) of the live sessions at scrape time."""
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(_SessionCollector(live_tracks))
        self.bad_poses = Counter("splatcast_bad_pose_messages", "Pose messages dropped as malformed", registry=r)
        self.no_relay = Counter("splatcast_sessions_without_relay", "Sessions that asked the TURN server for a relay and got none", registry=r)
        self.render = Histogram("splatcast_render_seconds", "One batched render call", buckets=_STAGE_BUCKETS, registry=r)
        self.convert = Histogram("splatcast_convert_seconds", "Colour conversion of one frame", buckets=_STAGE_BUCKETS, registry=r)
        self.encode = Histogram("splatcast_encode_seconds", "Video encode of one frame", buckets=_STAGE_BUCKETS, registry=r)
        self.pose_to_encoded = Histogram(
            "splatcast_pose_to_encoded_seconds", "A pose message's arrival to the first encoded frame showing it", buckets=_LATENCY_BUCKETS, registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self):
        yield from self._families


def merge_expositions(expositions: dict[str, str], label: str = "worker") -> bytes:
    """Several processes' text expositions as one, each sample labelled ``label=<its key>``.

    A sharded server's workers keep per-session series that are read at scrape time, which
    prometheus_client's multiprocess mode cannot carry; so the front scrapes and joins them."""
    families: dict[str, Metric] = {}
    for key, text in expositions.items():
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            merged.samples += [Sample(s.name, s.labels | {label: key}, s.value, s.timestamp, s.exemplar) for s in family.samples]
    registry = CollectorRegistry()
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)
