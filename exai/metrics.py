"""Prometheus metrics of the daemon. Their names are public (README, dashboards and alerts use them): keep them."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

requests_total = Counter(
    "exai_requests", "tools/call requests by outcome", ["tool", "outcome"], registry=REGISTRY
)
request_duration = Histogram(
    "exai_request_duration_seconds", "tools/call duration", ["tool"], registry=REGISTRY
)
inflight_requests = Gauge("exai_inflight_requests", "tools/call running now", registry=REGISTRY)
connections = Gauge("exai_connections", "open client connections: WebSocket connections and Streamable HTTP sessions", registry=REGISTRY)
limiter_borrowed = Gauge(
    "exai_limiter_borrowed", "tokens borrowed per limiter", ["limiter"], registry=REGISTRY
)
provider_requests_total = Counter(
    "exai_provider_requests",
    "provider HTTP attempts by outcome",
    ["provider", "model", "outcome"],
    registry=REGISTRY,
)
provider_latency = Histogram(
    "exai_provider_latency_seconds", "provider attempt latency", ["provider"], registry=REGISTRY
)
cancellations_total = Counter(
    "exai_cancellations", "cancelled tools/call by reason", ["reason"], registry=REGISTRY
)

_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label set: after the first time, a dict
    hit instead of prometheus_client's validation and lock. Label sets are few and fixed
    (tools, outcomes, providers, models), and a child, once made, lives as long as its metric."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child
