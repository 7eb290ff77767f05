"""Worker metrics: Prometheus series and the dashboard's figures, read from the runtime.

:class:`WorkerMetrics` owns its own :class:`prometheus_client.CollectorRegistry` (never the global
default one). Counters, rolling model metrics and model versions are read from the
:class:`~stream.runtime.Runtime` at each scrape, and the online models from the worker's
:class:`~agents.state.PartitionStore`; latencies arrive through ``rt.observers``; the
consumer lag is set by the web layer (:func:`alphapulse.lag.consumer_lag`) before each scrape,
because reading it needs the running Faust consumer. Every series is prefixed ``alphapulse_``,
except those of prometheus_client's process and platform collectors
(``process_resident_memory_bytes``, ``python_info``, ...), which keep their usual names. Model
keys are an unbounded set, so only the first ``ALPHAPULSE_METRICS_MAX_MODEL_KEYS`` get a
``model_key`` label of their own; the others are summed under ``model_key="other"``.

Examples
--------
>>> from stream.runtime import Runtime
>>> from stream.settings import Settings
>>> rt = Runtime(Settings(_env_file=None), topics={})
>>> m = WorkerMetrics(rt)
>>> rt.count("predictions", 3); rt.count("deadletter.schema")
>>> rt.observe("predict_latency_s", 0.004)
>>> text = m.render().decode()
>>> "alphapulse_predictions_total 3.0" in text
True
>>> 'alphapulse_deadletters_total{reason="schema"} 1.0' in text
True
>>> rt.count("state_refused.unreadable_record")
>>> 'alphapulse_state_refused_total{reason="unreadable_record"} 1.0' in m.render().decode()
True
>>> "process_resident_memory_bytes" in text
True
>>> m.snapshot()["latency"]["p50_ms"]
4.0
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from agents.state import PartitionStore
from alphapulse._key_summaries import KeySummaries
from alphapulse._labels import OTHER, LabelCap
from stream.runtime import Runtime

__all__ = ["LATENCY_BUCKETS", "WorkerMetrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Histogram buckets of the latency series, in seconds."""

#: Runtime counter name -> (metric name without prefix, help text).
_NAMED_COUNTERS = {
    "predictions": ("predictions", "Signal requests answered with a prediction."),
    "outcomes.learned": ("outcomes_learned", "Trade outcomes learned by the online models."),
    "hard_examples": ("hard_examples", "Confidently wrong predictions sent to the retrain queue."),
    "drifts": ("drifts", "Drift alarms raised by the online models."),
    "checkpoints": ("checkpoints", "Learner transactions committed (state, side outputs, offset)."),
    "batches.signals": ("signal_batches", "Batches of signal requests taken from the fetch."),
    "batches.outcomes": ("outcome_batches", "Batches of trade outcomes taken from the fetch."),
}
_ROLLING = ("roc_auc", "log_loss", "accuracy")


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def observe_all(hist: Histogram, values: Sequence[float]) -> None:
    """``hist.observe`` of each value, with one increment per bucket for a batch.

    A histogram's ``observe`` takes a lock per call, and a batch of answers brings hundreds of
    latencies at once. The bulk path reads prometheus_client's fields (``_upper_bounds``,
    ``_buckets``, ``_sum``) and falls back to ``observe`` where they are not there.

    >>> from prometheus_client import CollectorRegistry
    >>> h = Histogram("h", "h", buckets=(0.1, 1.0), registry=CollectorRegistry())
    >>> observe_all(h, [0.05, 0.1, 0.5, 2.0, 0.2])
    >>> [(s.labels["le"], s.value) for s in h.collect()[0].samples if s.name == "h_bucket"]
    [('0.1', 2.0), ('1.0', 4.0), ('+Inf', 5.0)]
    """
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if len(values) < 4 or bounds is None or buckets is None or total is None:
        for v in values:
            hist.observe(v)
        return
    total.inc(sum(values))
    for i, n in Counter(bisect.bisect_left(bounds, v) for v in values).items():
        buckets[i].inc(n)


class WorkerMetrics:
    """Prometheus series and dashboard figures of one worker process.

    Parameters
    ----------
    rt
        The worker's runtime; an observer is added to ``rt.observers``.
    store
        The worker's learner state, whose online models the figures show; None for none.
    latency_window
        Most recent latencies the dashboard's quantiles cover.
    latency_window_s
        Only latencies of the last this many seconds count in the quantiles.
    history
        How many samples (one per :meth:`sample` call) the dashboard's time series keep.
    max_model_keys
        Model keys with a ``model_key`` label of their own; the others share ``other``. None
        reads ``ALPHAPULSE_METRICS_MAX_MODEL_KEYS`` from ``rt.settings``.
    """

    def __init__(
        self,
        rt: Runtime,
        store: PartitionStore | None = None,
        latency_window: int = 4096,
        latency_window_s: float = 60.0,
        history: int = 600,
        max_model_keys: int | None = None,
    ) -> None:
        if latency_window < 1 or history < 1 or latency_window_s <= 0:
            raise ValueError("latency_window, latency_window_s and history must be above 0")
        self.rt = rt
        self.store = store
        self.registry = CollectorRegistry(auto_describe=False)
        self.histograms: dict[str, Histogram] = {}
        # Times and values of each name's recent observations, in two deques: numpy reads a
        # deque of floats without a Python loop (the sampler runs on the agents' event loop).
        self.recent: dict[str, tuple[deque[float], deque[float]]] = {}
        self.latency_window = latency_window
        self.latency_window_s = latency_window_s
        self.lag: dict[tuple[str, int], int] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self.started = time.time()
        self._counts: deque[tuple[float, int, int]] = deque(maxlen=64)
        self._rates = (0.0, 0.0)
        self.log_records_dropped: Callable[[], int] | None = None
        """Reads the entries the Redis log stream dropped (set by the worker when it has one)."""
        limit = rt.settings.metrics_max_model_keys if max_model_keys is None else max_model_keys
        self.model_key_label = LabelCap(limit)
        self._key_summaries = KeySummaries()
        self.registry.register(_RuntimeCollector(self))
        # Memory, CPU and open files of this process: the first figures an operator watches.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        rt.observers.append(self.observe)

    def observe(self, name: str, values: Sequence[float]) -> None:
        """Record durations: a name ending in ``_s`` (``predict_latency_s``) is in seconds.

        Other names are not durations and are left to the other observers.
        """
        if not name.endswith("_s"):
            return
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return
        hist = self.histograms.get(name)
        if hist is None:
            hist = Histogram(
                f"alphapulse_{name[:-2]}_seconds",
                f"Distribution of {name} as reported by the agents.",
                buckets=LATENCY_BUCKETS,
                registry=self.registry,
            )
            self.histograms[name] = hist
            n = self.latency_window
            self.recent[name] = (deque(maxlen=n), deque(maxlen=n))
        observe_all(hist, finite)
        times, recent = self.recent[name]
        times.extend(itertools.repeat(time.monotonic(), len(finite)))
        recent.extend(finite)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)

    def quantiles(self, name: str = "predict_latency_s") -> dict[str, float | int | None]:
        """p50 and p99 in milliseconds of the recent values of ``name``, and how many there are."""
        horizon = time.monotonic() - self.latency_window_s
        times, values = self.recent.get(name, ((), ()))
        start = 0
        if times and times[0] < horizon:  # else every value is recent enough (the usual case)
            start = int(np.searchsorted(np.fromiter(times, float, len(times)), horizon))
        arr = np.fromiter(values, float, len(values))[start:] * 1000.0
        if not arr.size:
            return {"p50_ms": None, "p99_ms": None, "n": 0}
        p50, p99 = np.percentile(arr, [50, 99])
        return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "n": int(arr.size)}

    def components(self) -> dict[str, dict[str, float | int | None]]:
        """Rolling metrics of each component and of the blend, from joined outcomes."""
        return {
            name: {"n": m.n, "roc_auc": m.roc_auc, "log_loss": m.log_loss, "accuracy": m.accuracy}
            for name, m in sorted(self.rt.monitor.metrics().items())
        }

    def online_models(self) -> dict[str, dict[str, Any]]:
        """Per model key: outcomes learned, rolling metrics and drift points of its online model
        (each key computed again only after it learned: :class:`KeySummaries`)."""
        return {} if self.store is None else self._key_summaries.collect(self.store)

    def sample(
        self,
        now: float | None = None,
        quantiles: dict[str, float | int | None] | None = None,
        components: dict[str, dict[str, float | int | None]] | None = None,
    ) -> dict[str, Any]:
        """Append one point to the dashboard's time series (called about once a second), with
        :meth:`quantiles` and :meth:`components` as given, else computed now."""
        now = time.time() if now is None else now
        c = self.rt.counters
        preds, outs = c["predictions"], c["outcomes.learned"]
        self._counts.append((now, preds, outs))
        # rates over the last ~5 s, so that one slow tick does not make the curve jump
        first = next((x for x in self._counts if now - x[0] <= 5.5), self._counts[0])
        if now > first[0]:
            dt = now - first[0]
            self._rates = ((preds - first[1]) / dt, (outs - first[2]) / dt)
        q = self.quantiles() if quantiles is None else quantiles
        if components is None:
            components = self.components()
        point = {
            "t": int(now * 1000),
            "predictions_per_s": round(self._rates[0], 3),
            "outcomes_per_s": round(self._rates[1], 3),
            "p50_ms": q["p50_ms"],
            "p99_ms": q["p99_ms"],
            "auc": {k: v["roc_auc"] for k, v in components.items()},
            "lag": sum(self.lag.values()),
        }
        self.history.append(point)
        return point

    def performance(self) -> dict[str, Any]:
        """The worker's performance figures: totals, rates, latency, rolling metrics per
        component, model versions and consumer lag (the Redis log stream's snapshots)."""
        c = self.rt.counters
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "predictions_total": c["predictions"],
            "outcomes_total": c["outcomes.learned"],
            "drifts_total": c["drifts"],
            "deadletters": {
                k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("deadletter.")
            },
            "rates": {"predictions_per_s": self._rates[0], "outcomes_per_s": self._rates[1]},
            "latency": self.quantiles(),
            "components": self.components(),
            "versions": dict(self.rt.serving.versions),
            "lag": {
                "total": sum(self.lag.values()),
                "partitions": [
                    {"topic": t, "partition": p, "lag": n} for (t, p), n in sorted(self.lag.items())
                ],
            },
        }

    def snapshot(self, with_history: bool = False) -> dict[str, Any]:
        """Every figure of the dashboard as a JSON-ready dict."""
        out: dict[str, Any] = {
            "ts": int(time.time() * 1000),
            **self.performance(),
            "counters": dict(sorted(self.rt.counters.items())),
            "online": self.online_models(),
        }
        if with_history:
            out["history"] = list(self.history)
        return out


class _RuntimeCollector:
    """Builds the runtime-derived series at each scrape."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._rolling()
        versions = GaugeMetricFamily(
            "alphapulse_model_version",
            "Registry version of each batch model served.",
            labels=["role"],
        )
        info = InfoMetricFamily(
            "alphapulse_model_version",
            "Registry version of each batch model served, as a label (the value is always 1).",
            labels=["role"],
        )
        for role, v in sorted(self.m.rt.serving.versions.items()):
            versions.add_metric([role], float(v))
            info.add_metric([role], {"version": str(v)})
        yield versions
        yield info
        lag = GaugeMetricFamily(
            "alphapulse_consumer_lag",
            "Messages behind the high watermark, per assigned partition.",
            labels=["topic", "partition"],
        )
        for (topic, part), n in sorted(self.m.lag.items()):
            lag.add_metric([topic, str(part)], float(n))
        yield lag
        up = GaugeMetricFamily("alphapulse_uptime_seconds", "Seconds since the worker started.")
        up.add_metric([], time.time() - self.m.started)
        yield up
        dropped = CounterMetricFamily(
            "alphapulse_log_records_dropped",
            "Log records and snapshots not written to the Redis log stream: its queue was full.",
        )
        read = self.m.log_records_dropped
        dropped.add_metric([], float(read() if read is not None else 0))
        yield dropped

    def _counters(self) -> Iterator[Metric]:
        counters = self.m.rt.counters
        for key, (name, doc) in _NAMED_COUNTERS.items():
            fam = CounterMetricFamily(f"alphapulse_{name}", doc)
            fam.add_metric([], float(counters[key]))
            yield fam
        dead = CounterMetricFamily(
            "alphapulse_deadletters", "Messages sent to the dead-letter topic.", labels=["reason"]
        )
        rerouted = CounterMetricFamily(
            "alphapulse_rerouted",
            "Messages re-sent to the partition of their model key.",
            labels=["topic"],
        )
        refused = CounterMetricFamily(
            "alphapulse_state_refused",
            "Learner partition states refused (unreadable, deleted or missing records, or a "
            "checkpoints topic that loses records); the partition is not learned.",
            labels=["reason"],
        )
        other = CounterMetricFamily(
            "alphapulse_events", "Other events counted by the agents.", labels=["name"]
        )
        for key, n in sorted(counters.items()):
            if key in _NAMED_COUNTERS:
                continue
            if key.startswith("deadletter."):
                dead.add_metric([key.split(".", 1)[1]], float(n))
            elif key.startswith("state_refused."):
                refused.add_metric([key.split(".", 1)[1]], float(n))
            elif key.endswith(".rerouted"):
                rerouted.add_metric([key.split(".", 1)[0]], float(n))
            else:
                other.add_metric([key], float(n))
        yield from (dead, rerouted, refused, other)

    def _rolling(self) -> Iterator[Metric]:
        comp = _rolling_gauges(
            "alphapulse_component",
            "Rolling {} of each component and of the blend over recent joined outcomes.",
            "component",
        )
        window = GaugeMetricFamily(
            "alphapulse_component_window_outcomes",
            "Outcomes in each component's rolling window.",
            labels=["component"],
        )
        for name, m in self.m.components().items():
            window.add_metric([name], float(m["n"] or 0))
            for k in _ROLLING:
                v = m[k]
                if _finite(v):
                    comp[k].add_metric([name], float(v))  # type: ignore[arg-type]
        yield from comp.values()
        yield window
        yield from self._online()

    def _online(self) -> Iterator[Metric]:
        """Per model key, each under its capped label; the rolling metrics of the keys under
        ``other`` are left out, since a sum or mean of them would mean nothing."""
        online = _rolling_gauges(
            "alphapulse_online",
            "Rolling prequential {} of the online model of each model key.",
            "model_key",
        )
        learned = GaugeMetricFamily(
            "alphapulse_online_outcomes_learned",
            "Outcomes learned by the online model of each model key.",
            labels=["model_key"],
        )
        drifts = GaugeMetricFamily(
            "alphapulse_online_drift_points",
            "Drift points recorded by the online model of each model key.",
            labels=["model_key"],
        )
        models = GaugeMetricFamily(
            "alphapulse_online_models",
            "Online models held, per model key label (under other: how many keys share it).",
            labels=["model_key"],
        )
        # label -> [models, outcomes learned, drift points]
        totals: dict[str, list[float]] = {}
        for key, om in self.m.online_models().items():
            label = self.m.model_key_label(key)
            t = totals.setdefault(label, [0.0, 0.0, 0.0])
            t[0] += 1
            t[1] += om["n_learned"]
            t[2] += om["drifts"]
            if label == OTHER:
                continue
            for k in _ROLLING:
                if _finite(om[k]):
                    online[k].add_metric([label], float(om[k]))
        for label, (n, n_learned, n_drifts) in totals.items():
            models.add_metric([label], n)
            learned.add_metric([label], n_learned)
            drifts.add_metric([label], n_drifts)
        yield from online.values()
        yield from (learned, drifts, models)


def _rolling_gauges(prefix: str, help_text: str, label: str) -> dict[str, GaugeMetricFamily]:
    """One gauge family per rolling metric, named ``{prefix}_{metric}``."""
    return {
        k: GaugeMetricFamily(f"{prefix}_{k}", help_text.format(k), labels=[label]) for k in _ROLLING
    }
