"""The control plane's Prometheus metrics, served at ``/metrics`` on the admin port without a token.

Nothing in them is secret: counts and durations, labelled by route templates
(``/admin/v1/workspaces/{name}``, never the name itself), HTTP methods and statuses.
A registry per application rather than prometheus-client's global one, so that
tests can build as many applications as they like in one process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ControlPlaneMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.usage_records = Counter(
            "infery_usage_records_ingested",
            "Usage records received from ext_proc: result stored (new) or duplicate (already known).",
            ("result",),
            registry=r,
        )
        self.usage_failures = Counter(
            "infery_usage_ingest_failures",
            "Usage batches that could not be stored (ext_proc retries them).",
            registry=r,
        )
        self.admin_requests = Counter(
            "infery_admin_requests",
            "Requests to the admin API and dashboard, by method, route template and status.",
            ("method", "route", "status"),
            registry=r,
        )
        self.publishes = Counter(
            "infery_config_publishes",
            "Configurations built from the store and published over xDS.",
            registry=r,
        )
        self.publish_duration = Histogram(
            "infery_config_publish_duration_seconds",
            "Time to build and publish one configuration.",
            buckets=PUBLISH_BUCKETS,
            registry=r,
        )

    def ingested(self, stored: int, duplicates: int) -> None:
        self.usage_records.labels("stored").inc(stored)
        self.usage_records.labels("duplicate").inc(duplicates)

    def timed_publish(
        self, publish: Callable[[], Coroutine[Any, Any, None]]
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """``publish`` that counts and times each successful run."""

        async def timed() -> None:
            started = time.perf_counter()
            await publish()
            self.publish_duration.observe(time.perf_counter() - started)
            self.publishes.inc()

        return timed

    def install(self, app: FastAPI) -> None:
        """``GET /metrics`` (no token) and the request counter on every other path."""
        registry, requests = self.registry, self.admin_requests

        @app.middleware("http")
        async def count_requests(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            response = await call_next(request)
            template = route_template(request.scope)
            if template != "/metrics":
                requests.labels(request.method, template, str(response.status_code)).inc()
            return response

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's full template (``/admin/v1/workspaces/{name}``): never an id or a name.

    FastAPI puts the innermost router's route in the scope, whose path lacks the
    prefixes of the routers it was included through: they are the part of the
    request path before the rendered route.
    """
    route = scope.get("route")
    suffix = getattr(route, "path_format", None)
    if not isinstance(suffix, str):
        return "unmatched"
    try:
        rendered = suffix.format(**{k: str(v) for k, v in scope.get("path_params", {}).items()})
    except (KeyError, IndexError, ValueError):
        return suffix
    path = str(scope.get("path", ""))
    return path[: len(path) - len(rendered)] + suffix if path.endswith(rendered) else suffix
