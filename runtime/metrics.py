"""Prometheus metrics for a whole node: the gateway's own, and its hosts'.

Each host process keeps a :class:`HostMetrics` (its own registry, observed once per batch,
never per message). When ``/metrics`` is scraped the gateway asks every host for
:meth:`HostMetrics.export` and re-labels what they answer with ``host``, so one scrape of the
gateway shows the whole node::

    parlour_http_requests_total{route="/v1/{tenant}/web/messages",channel="web",status="200"} 12
    parlour_host_turns_total{host="parlour-host-0"} 12
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)

Exported = list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]
"""Metric families as plain data, to cross from a host process: (name, type, help, samples)."""

# Host.counts as metric families: name -> (help, {count: its `kind` label, or "" for none})
HOST_COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "parlour_host_turns": ("turns applied", {"turns": ""}),
    "parlour_host_dedup_hits": ("messages seen before (a channel's retry): replied, not applied again",
                                {"duplicates": ""}),
    "parlour_host_activations": ("conversations read from the store to run a turn", {"activations": ""}),
    "parlour_host_commits": ("store commits (one per batch)", {"commits": ""}),
    "parlour_host_passivations": ("resident conversations forgotten", {
        "passivated_idle": "idle", "passivated_lru": "lru", "passivated_asked": "asked"}),
    "parlour_host_errors": ("errors by kind", {
        "turn_errors": "turn", "store_unavailable": "store_unavailable", "store_errors": "store",
        "fenced": "fenced", "internal_errors": "internal", "unreadable_records": "unreadable_record"}),
    "parlour_host_restarts_in_a_turn": ("times this host started and found a turn in flight when its process "
                                        "died (its watchdog killed it, or a crash)", {"died_in_turn": ""}),
    "parlour_host_quarantined": ("messages not run again because their host died while running them, "
                                 "each of the watchdog's tries: poison", {"quarantined": ""}),
    "parlour_host_regex_overruns": ("author regex searches that ran out of their message's budget (the rest "
                                    "of that message's searches did not run)", {"regex_overruns": ""}),
}


def export_registry(registry: CollectorRegistry) -> Exported:
    return [(m.name, m.type, m.documentation, [(s.name, dict(s.labels), s.value) for s in m.samples])
            for m in registry.collect()]


BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class DeliveryMetrics:
    """What the delivery supervisor observes, per send."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.sends = Counter("parlour_delivery_sends", "calls to channel APIs, by what they came to",
                             ["channel", "result"], registry=r)
        self.retries = Counter("parlour_delivery_retries", "calls to be made again (timeout, 429, 5xx)",
                               ["channel"], registry=r)
        self.dead = Counter("parlour_delivery_dead_letters", "replies given up on, into the dead letters",
                            ["channel"], registry=r)
        self.breaker = Gauge("parlour_delivery_breaker_state", "each endpoint's circuit: 0 closed, 1 half open, 2 open",
                             ["endpoint"], registry=r)
        self.queued = Gauge("parlour_delivery_queued", "replies read from the outbox and not yet sent", registry=r)
        self.dead_depth = Gauge("parlour_dead_letters", "replies in the dead-letter queue (every tenant)", registry=r)

    def export(self) -> Exported:
        return export_registry(self.registry)


class HostMetrics:
    """What one host observes, per batch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_size = Histogram("parlour_host_batch_size", "events per batch a host runs",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.commit_seconds = Histogram("parlour_store_commit_duration_seconds", "one store commit (a batch)",
                                        buckets=LATENCY_BUCKETS, registry=self.registry)

    def export(self, counts: Mapping[str, int], gauges: Mapping[str, float]) -> Exported:
        families = export_registry(self.registry)
        for name, (doc, sources) in HOST_COUNTERS.items():
            samples = [(f"{name}_total", {"kind": kind} if kind else {}, float(counts.get(count, 0)))
                       for count, kind in sources.items()]
            families.append((name, "counter", doc, samples))
        for name, value in gauges.items():
            families.append((name, "gauge", name.removeprefix("parlour_host_").replace("_", " "),
                             [(name, {}, float(value))]))
        return families


class HostsCollector(Collector):
    """The hosts' latest figures (set before each scrape), labelled by host (a node server's
    name, for ``parlour serve``: its host's figures and its gateway's)."""

    def __init__(self) -> None:
        self.latest: dict[str, Exported] = {}

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for host, families in sorted(self.latest.items()):
            for name, kind, doc, samples in families:
                metric = merged.setdefault(name, Metric(name, doc, kind))
                for sample, labels, value in samples:
                    metric.add_sample(sample, {"host": host, **labels}, value)
        return list(merged.values())


class GatewayMetrics:
    """The gateway process's metrics, in a registry of its own (``own``: so that two gateways
    in one test process do not share figures). ``registry`` is what ``/metrics`` shows: these
    and the hosts' (:class:`HostsCollector`). A node server's (``whole_node``) shows only the
    hosts', since every server, this one included, answers with its gateway's figures too."""

    def __init__(self, *, whole_node: bool = False) -> None:
        r = self.own = CollectorRegistry(auto_describe=True)
        self.requests = Counter("parlour_http_requests", "HTTP requests answered", ["route", "channel", "status"],
                                registry=r)
        self.request_seconds = Histogram("parlour_http_request_duration_seconds", "time to answer a request",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.turn_seconds = Histogram("parlour_turn_duration_seconds",
                                      "a message's arrival at the gateway to its committed outcome",
                                      ["channel"], buckets=LATENCY_BUCKETS, registry=r)
        self.pending = Gauge("parlour_ingress_pending", "messages accepted and not yet answered", registry=r)
        self.rejected = Counter("parlour_ingress_rejected", "messages refused before reaching a host", ["reason"],
                                registry=r)
        self.errors = Counter("parlour_errors", "errors by kind", ["kind"], registry=r)
        self.websockets = Gauge("parlour_websockets_open", "open chat WebSockets", registry=r)
        self.pushed = Counter("parlour_web_pushed", "replies from timers and calls pushed to web chats", ["result"],
                              registry=r)
        self.webhooks_refused = Counter("parlour_webhooks_refused", "channel webhooks refused for their signature",
                                        ["channel", "reason"], registry=r)
        self.channel_events = Counter("parlour_channel_events", "statuses and other events from channels (not turns)",
                                      ["channel", "kind", "status"], registry=r)
        self._children: dict[tuple[str, str, int], tuple] = {}  # bounded: routes are the app's, channels known
        self.hosts = HostsCollector()
        self.registry = CollectorRegistry(auto_describe=True)
        if not whole_node:
            self.registry.register(_Registered(self.own))
        self.registry.register(self.hosts)

    def observe_request(self, route: str, channel: str, status: int, seconds: float) -> None:
        """Once per request: the label children are looked up once per (route, channel, status)."""
        children = self._children.get((route, channel, status))
        if children is None:
            children = self._children[(route, channel, status)] = (
                self.requests.labels(route, channel, str(status)), self.request_seconds.labels(route))
        children[0].inc()
        children[1].observe(seconds)


class _Registered(Collector):
    """Another registry's metrics, collected as one collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def host_gauges(stats: Mapping[str, Any]) -> dict[str, float]:
    return {"parlour_host_resident_conversations": stats.get("resident", 0),
            "parlour_host_partitions": stats.get("partitions", 0),
            "parlour_host_http_calls_in_flight": stats.get("http_in_flight", 0)}
