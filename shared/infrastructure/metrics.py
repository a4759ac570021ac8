"""Prometheus metrics of an app process, served at ``GET /metrics`` (text exposition format).

``/metrics`` is internal, and guarded like ``/internal/...``: a request must carry the HMAC
signature of shared.infrastructure.internal_auth, else it gets 404. A signature rather than a
loopback check, because in the swarm a scraper is never on the app's loopback (it reaches the
task over the overlay network), while behind a reverse proxy on one host every request *is*
from loopback; a signature means the same thing in both places and is one tested code path.
A scraper signs with ``build_signed_headers`` (e.g. a small exporter sidecar).

Each process keeps its own registry: with several Hypercorn workers, each answers for itself.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from quart import Blueprint, Response

from shared.infrastructure.internal_auth import check_internal_request

METRICS_REGISTRY = CollectorRegistry()
# hit / miss / stale: a fragment looked up in the cache; timeout / error: an upstream fetch
# that failed (once per fetch, however many requests were waiting for it).
FRAGMENT_EVENTS = Counter(
    "rose_ash_fragment_events",
    "Fragment cache lookups (hit, miss, stale) and failed upstream fetches (timeout, error).",
    ["app", "type", "outcome"],
    registry=METRICS_REGISTRY,
)
FRAGMENT_FETCH_SECONDS = Histogram(
    "rose_ash_fragment_fetch_seconds",
    "Time an upstream fragment fetch took, successful or not.",
    ["app", "type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5),
    registry=METRICS_REGISTRY,
)

metrics_bp = Blueprint("metrics", __name__)


def record_fragment_event(app_name: str, fragment_type: str, outcome: str) -> None:
    FRAGMENT_EVENTS.labels(app=app_name, type=fragment_type, outcome=outcome).inc()


def observe_fragment_fetch(app_name: str, fragment_type: str, seconds: float) -> None:
    FRAGMENT_FETCH_SECONDS.labels(app=app_name, type=fragment_type).observe(seconds)


def render_metrics() -> bytes:
    return generate_latest(METRICS_REGISTRY)


@metrics_bp.get("/metrics")
async def serve_metrics() -> Response:
    check_internal_request()
    response = Response(render_metrics(), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
