"""Labeled counters and histograms in plain Python numbers, exposed only when Prometheus scrapes.

ext_proc counts every request (:class:`ext_proc.metrics.GatewayMetrics`) and every ext_proc
message (:class:`ext_proc.metrics.MessageTimes`). prometheus-client's ``Counter`` and
``Histogram`` take a lock per value touched (one per counter, two per histogram observation),
check that the metric is observable and, for a labeled one, validate and lock on ``labels()``:
eight locked increments, five checks and three histogram walks per non-streamed chat. Here a
label set's counter is one float and its histogram one list of bucket counts and a sum; the
exposition (names, help, types, labels, buckets, ``_created``) is built from them when
scraped, and reads as prometheus-client's own for the same observations (tests/ext_proc/
test_metrics.py checks that with hypothesis).

Thread safety without locks: only the event loop's thread writes (observations, and a new
label set's child); a scrape reads from prometheus-client's metrics thread. Under the GIL a
``dict.copy()`` or ``list(...)`` of built-in containers runs without a bytecode boundary, so a
scrape copies the children and each histogram's buckets before reading them and never sees a
dict change size under it. A scrape between an observation's bucket and its sum may see the
sum one observation behind; the count is the buckets' total, so a histogram is never
inconsistent with itself.

Label values are never checked on the hot path (one tuple per call, as the caller built it):
callers pass strings from a bounded set (see ext_proc/metrics.py's module docstring); the
number of values is checked once, when a label set's child is made.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]
Child = TypeVar("Child", "CounterChild", "HistogramChild")


class CounterChild:
    """One label set's counter."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:  # as prometheus-client: a counter only goes up
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class HistogramChild:
    """One label set's histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # Prometheus buckets are upper bounds, inclusive: the first bound >= the value.
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """The buckets as Prometheus exposes them, each counting the ones below it (+Inf: the count)."""
        running, out = 0, []
        for count in list(self.counts):
            running += count
            out.append(running)
        return out


class _Family(Collector, Generic[Child]):
    """A metric's children by label values, made on first use (as ``labels()`` would)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *, created: bool) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._created = created  # expose ``_created`` samples (prometheus-client's default)
        self._children: dict[Labels, Child] = {}

    def _new_child(self) -> Child:
        raise NotImplementedError

    def child(self, labels: Labels) -> Child:
        child = self._children.get(labels)
        if child is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: {len(labels)} label values for {self.labelnames}")
            child = self._children[labels] = self._new_child()
        return child

    def children(self) -> list[tuple[Labels, Child]]:
        """A scrape's copy of the label sets and their children (see the module docstring)."""
        return list(self._children.copy().items())


class PlainCounter(_Family[CounterChild]):
    """A labeled counter. Without label names it is exported at 0 from the start, with them
    a label set appears on its first ``inc``, as prometheus-client's ``Counter`` does."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, created: bool = True
    ) -> None:
        super().__init__(name, documentation, labelnames, created=created)
        if not self.labelnames:
            self._children[()] = CounterChild()

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self.child(labels)
        child.inc(amount)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self.children():
            family.add_metric(labels, child.value, child.created if self._created else None)
        yield family


class PlainHistogram(_Family[HistogramChild]):
    """A labeled histogram; a label set appears when :meth:`child` first makes it."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        *,
        created: bool = True,
    ) -> None:
        super().__init__(name, documentation, labelnames, created=created)
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(self.bounds) or not self.bounds or self.bounds[-1] == float("inf"):
            raise ValueError(f"{name}: buckets must be sorted finite upper bounds (+Inf is implied)")
        self._le = (*map(floatToGoString, self.bounds), "+Inf")

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, labels: Labels, value: float) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self.child(labels)
        child.observe(value)

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, child in self.children():
            total = child.sum  # read before the buckets: never ahead of the count
            family.add_metric(labels, list(zip(self._le, child.cumulative(), strict=True)), total)
            if self._created:
                named = dict(zip(self.labelnames, labels, strict=True))
                family.add_sample(self.name + "_created", named, child.created)
        yield family
