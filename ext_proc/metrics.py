"""ext_proc's Prometheus metrics: OpenTelemetry's GenAI names and the gateway's own ``infery_*``.

Per-request figures come from the usage record each request already emits
(:meth:`GatewayMetrics.recorder` wraps the reporter's ``record``), so the exchange
needs no hooks of its own and a metric can never disagree with usage analytics.
Per-request and per-message figures are plain numbers (ext_proc/metric_families.py),
exposed as prometheus-client's own Counter and Histogram would expose them when Prometheus
scrapes: only the event loop's thread writes them, a scrape reads them from the metrics
thread, and nothing locks per value (that module says why this is safe).
Figures another component already keeps (the limiter's fail-open and refusal
counts, the usage spool's depth) are read when Prometheus scrapes, not on the hot
path.

Every ext_proc process serves its own registry on its own port
(:func:`serve`): processes share no memory, and one port each keeps each scrape
exact without prometheus-client's multiprocess mode (which needs a shared
directory, per-process files and cannot express callback gauges such as the
spool depth). ``infery up`` gives process ``i`` port ``INFERY_METRICS_PORT + i``.

Cardinality is bounded: models, providers and endpoints are the configured ones;
error codes the gateway's own (:data:`ERROR_CODES`); the workspace is a label only when
``INFERY_METRICS_WORKSPACE_LABEL`` is set; keys and members never are (they are in usage
analytics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from infery_proto.v1 import usage_pb2
from infery_proto.wire import ERRORS
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ext_proc import endpoints
from ext_proc.metric_families import HistogramChild, PlainCounter, PlainHistogram

log = logging.getLogger("infery.ext_proc.metrics")

Recorder = Callable[[usage_pb2.UsageRecord], None]

# OpenTelemetry GenAI semantic conventions, explicit bucket boundaries as advised there.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
MESSAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

# gen_ai.operation.name per served path (each endpoint's ``operation``, OTel's values).
OPERATIONS = {path: e.operation for e in endpoints.SERVED.endpoints for path in e.paths}
OTHER = "other"
# ext_proc's ProcessingRequest kinds (anything else counts as other).
PHASES = (
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "response_trailers",
    OTHER,
)

# The error codes a label value may be: the gateway's own, and the one it records for a client
# that left (ext_proc/exchange.py). An OpenAI-format provider's stream error keeps the
# provider's code (ext_proc/translators/chat_openai.py): any code not here counts as other.
ERROR_CODES = frozenset({*ERRORS, "stream_interrupted"})

GENAI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "gen_ai_provider_name",
)


class LimiterCounts(Protocol):
    fail_open: int
    refused: dict[str, int]


class SpoolState(Protocol):
    def pending(self) -> int: ...

    @property
    def stats(self) -> Any: ...


class KeptResponses(Protocol):
    keep_failures: int


class GatewayMetrics:
    """One process's metrics, in a registry of its own (tests build as many as they like)."""

    def __init__(self, *, workspace_label: bool = False, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._workspace = workspace_label
        ws = ("workspace",) if workspace_label else ()
        r = self.registry
        # Plain families, exposed when scraped (ext_proc/metric_families.py: no lock per value).
        self.token_usage = PlainHistogram(
            "gen_ai_client_token_usage",
            "Tokens used per request (OTel gen_ai.client.token.usage), by gen_ai_token_type.",
            (*GENAI_LABELS, "gen_ai_token_type", *ws),
            TOKEN_BUCKETS,
        )
        self.duration = PlainHistogram(
            "gen_ai_server_request_duration_seconds",
            "Time from the request's arrival to its last byte (OTel gen_ai.server.request.duration).",
            (*GENAI_LABELS, "error_type", *ws),
            DURATION_BUCKETS,
        )
        self.ttft = PlainHistogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed chunk (OTel gen_ai.server.time_to_first_token).",
            (*GENAI_LABELS, *ws),
            TTFT_BUCKETS,
        )
        self.tpot = PlainHistogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, streamed responses"
            " (OTel gen_ai.server.time_per_output_token).",
            (*GENAI_LABELS, *ws),
            TPOT_BUCKETS,
        )
        self.requests = PlainCounter(
            "infery_requests",
            "Metered requests by endpoint, HTTP status and error code.",
            ("endpoint", "status", "error_code", *ws),
        )
        self.credits = PlainCounter(
            "infery_credits_charged",
            "Credits charged (1 credit = US$1), by the model that served.",
            ("gen_ai_response_model", *ws),
        )
        self.fallbacks = PlainCounter(
            "infery_fallbacks",
            "Requests a fallback served, from the requested model to the one that answered.",
            ("from_model", "to_model", *ws),
        )
        self.replays = PlainCounter(
            "infery_idempotent_replays", "Answers replayed from the idempotency store.", ws
        )
        self.usage_estimated = PlainCounter(
            "infery_usage_estimated",
            "Requests charged on the gateway's token estimate (usage missing, invalid, or the stream cut).",
            ws,
        )
        self.usage_rejected = PlainCounter(
            "infery_usage_rejected", "Requests whose provider-reported usage was refused as invalid.", ws
        )
        for family in (
            self.token_usage,
            self.duration,
            self.ttft,
            self.tpot,
            self.requests,
            self.credits,
            self.fallbacks,
            self.replays,
            self.usage_estimated,
            self.usage_rejected,
        ):
            r.register(family)
        self.messages = MessageTimes()  # each answer: ``self.messages.answered``
        r.register(self.messages)
        self._xds = _XdsState()
        r.register(self._xds)
        # Each (operation, models, provider[, workspace])'s GenAI histograms, resolved once
        # (bounded: see the module docstring).
        self._series: dict[tuple[str, ...], _GenAiSeries] = {}

    # -- per request ------------------------------------------------------------

    def observe(self, rec: usage_pb2.UsageRecord) -> None:
        """Count one finished request from its usage record (plain numbers: nothing locks)."""
        ws = (rec.workspace_id,) if self._workspace else ()
        endpoint, status, error_code, model_used = rec.endpoint, rec.status, rec.error_code, rec.model_used
        if error_code and error_code not in ERROR_CODES:  # a provider's: see ERROR_CODES
            error_code = OTHER
        operation = OPERATIONS.get(endpoint, OTHER)
        # A model that was not chosen (unknown or not allowed) is whatever the client typed:
        # never a label value, or any client could grow the series without bound.
        genai = (operation, rec.model_requested if model_used else OTHER, model_used, rec.provider, *ws)
        self.requests.inc((endpoint if operation != OTHER else OTHER, str(status), error_code, *ws))
        latency_s = rec.latency_ms / 1000
        replay = rec.idempotent_replay  # each protobuf field read costs ~600 instructions
        if replay:
            self.replays.inc(ws)
        error = error_code or (str(status) if status >= 400 else "")
        self.duration.observe((*genai[:4], error, *ws), latency_s)
        if not model_used:  # refused before a model was chosen: no tokens, no provider
            return
        if rec.fallback_from:
            self.fallbacks.inc((rec.fallback_from, model_used, *ws))
        if status < 400 and not replay:
            series = self._series.get(genai) or self._genai_series(genai)
            series.input.observe(rec.input_tokens)
            output_tokens = rec.output_tokens
            series.output.observe(output_tokens)
            cached = rec.cached_input_tokens
            if cached:
                series.cached.observe(cached)
            ttft_ms = rec.ttft_ms
            if ttft_ms > 0 and rec.stream:
                series.ttft.observe(ttft_ms / 1000)
                if output_tokens > 1:
                    series.tpot.observe(max((latency_s - ttft_ms / 1000) / (output_tokens - 1), 0.0))
        if rec.usage_estimated:
            self.usage_estimated.inc(ws)
        if rec.usage_rejected:
            self.usage_rejected.inc(ws)
        credits = rec.credits
        if credits and credits != "0":
            # The label set first, then the amount: a credit that is no number still shows its
            # model's series at 0, as it always did (the oracle in tests/ext_proc/test_metrics.py).
            self.credits.child((model_used, *ws)).inc(float(credits))

    def _genai_series(self, genai: tuple[str, ...]) -> _GenAiSeries:
        """Make one GenAI series' five children at once, as the exposition has always had them
        (a cached-token and the stream histograms at zero for a series that never used them)."""
        ws = genai[4:]
        head = genai[:4]
        series = self._series[genai] = _GenAiSeries(
            self.token_usage.child((*head, "input", *ws)),
            self.token_usage.child((*head, "output", *ws)),
            self.token_usage.child((*head, "cached", *ws)),
            self.ttft.child(genai),
            self.tpot.child(genai),
        )
        return series

    def recorder(self, record: Recorder) -> Recorder:
        """``record`` that also counts each record (what ``Services.record`` gets)."""

        def observed(rec: usage_pb2.UsageRecord) -> None:
            record(rec)
            try:
                self.observe(rec)
            except Exception:  # a metric never fails the request it counts
                log.exception("counting usage record %s failed", rec.request_id)

        return observed

    # -- components read when scraped -------------------------------------------

    def watch_limiter(self, limiter: LimiterCounts) -> None:
        self.registry.register(_LimiterCollector(limiter))

    def watch_spool(self, reporter: SpoolState) -> None:
        self.registry.register(_SpoolCollector(reporter))

    def watch_responses(self, store: KeptResponses) -> None:
        """Export how many Responses API answers could not be kept (the store did not answer)."""
        self.registry.register(_KeptResponsesCollector(store))

    def watch_config(self, problem: Callable[[], str]) -> None:
        """Export whether the configuration in force is incomplete or stale (``problem()`` non-empty)."""
        self._xds.problem = problem

    def xds_updated(self) -> None:
        """The subscriber applied a new configuration (its ``on_update``)."""
        self._xds.updates += 1
        self._xds.last_update = time.time()


@dataclass(frozen=True, slots=True)
class _GenAiSeries:
    """The GenAI histograms' children for one (operation, models, provider[, workspace])."""

    input: HistogramChild
    output: HistogramChild
    cached: HistogramChild
    ttft: HistogramChild
    tpot: HistogramChild


class MessageTimes(Collector):
    """ext_proc's messages answered and their latency, by phase: ``infery_ext_proc_messages_total``
    and ``infery_ext_proc_message_duration_seconds``.

    Every ext_proc message is observed (four per non-streamed request, one per streamed chunk),
    so this is one plain histogram per phase (ext_proc/metric_families.py, the same piece the
    per-request metrics use; the thread-safety argument is there), exposed when scraped, instead
    of a prometheus-client Counter and Histogram: those take a lock per value and reached the
    message through two wrapper async generators, ~6% of the server path's instructions per
    request (bench/README.md). The count of messages is the histogram's count, not a second
    counter. Neither family has ``_created`` samples (it never had).
    """

    def __init__(self) -> None:
        self._latency = PlainHistogram(
            "infery_ext_proc_message_duration_seconds",
            "Time from an ext_proc message's arrival to its answer.",
            ("phase",),
            MESSAGE_BUCKETS,
            created=False,
        )
        self._phases = {phase: self._latency.child((phase,)) for phase in PHASES}  # all exported
        self._other = self._phases[OTHER]

    def answered(self, phase: str, arrived: float) -> None:
        """An ext_proc message of ``phase`` that arrived at ``arrived`` (``perf_counter``) is
        answered now: ext_proc/server.py calls it for each answer (``gauges.messages.answered``)."""
        self._phases.get(phase, self._other).observe(time.perf_counter() - arrived)

    def collect(self) -> Iterable[Metric]:
        counts = CounterMetricFamily(
            "infery_ext_proc_messages", "ext_proc messages answered, by phase.", labels=("phase",)
        )
        for labels, child in self._latency.children():
            counts.add_metric(labels, sum(list(child.counts)))
        yield counts
        yield from self._latency.collect()


class _XdsState(Collector):
    def __init__(self) -> None:
        self.updates = 0
        self.last_update = 0.0
        self.problem: Callable[[], str] = lambda: ""

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "infery_xds_updates", "Configurations received from the control plane and applied.", self.updates
        )
        yield GaugeMetricFamily(
            "infery_xds_config_version",
            "Generation of the configuration in force (configurations applied since start; 0 = none yet).",
            self.updates,
        )
        yield GaugeMetricFamily(
            "infery_xds_last_update_timestamp_seconds",
            "Unix time the configuration in force was applied (0 = none yet).",
            self.last_update,
        )
        yield GaugeMetricFamily(
            "infery_xds_config_problem",
            "1 while part of the configuration failed to arrive (too large, refused): stale, not ready.",
            1 if self.problem() else 0,
        )


class _LimiterCollector(Collector):
    def __init__(self, limiter: LimiterCounts) -> None:
        self._limiter = limiter

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "infery_limiter_fail_open",
            "Admissions or settlements let through unchecked because the shared state was unreachable.",
            self._limiter.fail_open,
        )
        refusals = CounterMetricFamily(
            "infery_limit_refusals",
            "Requests the gateway refused with 429: reason rate_limit (rpm/tpm) or budget.",
            labels=("reason",),
        )
        for reason in ("rate_limit", "budget"):
            refusals.add_metric((reason,), self._limiter.refused.get(reason, 0))
        yield refusals


class _KeptResponsesCollector(Collector):
    def __init__(self, store: KeptResponses) -> None:
        self._store = store

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "infery_responses_not_kept",
            "Responses API answers given but not kept (store): the response store never took them,"
            " retries spent.",
            self._store.keep_failures,
        )


class _SpoolCollector(Collector):
    """The usage reporter's queue: depth, deliveries and how long delivery has stalled."""

    def __init__(self, reporter: SpoolState) -> None:
        self._reporter = reporter

    def collect(self) -> Iterable[Metric]:
        pending = self._reporter.pending()
        stats = self._reporter.stats
        yield GaugeMetricFamily(
            "infery_usage_spool_pending_records",
            "Usage records not yet acked by the control plane (in memory or spooled on disk).",
            pending,
        )
        yield CounterMetricFamily(
            "infery_usage_delivered_records", "Usage records acked by the control plane.", stats.delivered
        )
        yield CounterMetricFamily(
            "infery_usage_delivery_failures",
            "Usage deliveries that failed and will be retried.",
            stats.failed_attempts,
        )
        waiting_since = max(stats.last_delivery_at, stats.pending_since)
        lag = time.time() - waiting_since if pending and waiting_since else 0.0
        yield GaugeMetricFamily(
            "infery_usage_delivery_lag_seconds",
            "Seconds records have waited without a delivery to the control plane (0 when none waits).",
            lag,
        )


def serve(metrics: GatewayMetrics, port: int, host: str) -> bool:
    """Serve ``/metrics`` from prometheus-client's own thread: a scrape never runs on the event loop.

    A port already taken costs the metrics, not the requests: logged as an error, and False.
    """
    try:
        start_http_server(port, host, registry=metrics.registry)
    except OSError as exc:
        log.error("cannot serve /metrics on %s:%s (%s); serving requests without metrics", host, port, exc)
        return False
    return True
