"""Wire a validated config into running services: store, channels, queues, metrics endpoint."""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Site

from engine.components import BuildContext
from engine.config.validate import ValidatedConfig
from engine.metrics import Metrics
from engine.queue import DestinationQueue
from engine.service import ChannelService
from engine.store.store import Store

log = logging.getLogger("radbridge")


class MetricsPage(Resource):
    """``GET /metrics`` in the Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 - twisted.web naming
        """The exposition of the engine's registry."""
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.metrics.exposition()


class App:
    """The running engine: one store, one metrics registry, one service per channel."""

    def __init__(self, vc: ValidatedConfig, reactor: Any, *, store: Store | None = None) -> None:
        self.vc = vc
        self.reactor = reactor
        self.metrics = Metrics()
        root = vc.root
        vc.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = store or Store(
            vc.database_url,
            reactor,
            sqlite_synchronous=root.store.sqlite_synchronous,
            writer_mode=root.store.writer,
            max_batch=root.store.group_commit_max,
        )
        self.services: dict[str, ChannelService] = {}
        self.metrics_port: Any = None
        self.admin: Any = None  # engine.admin.server.AdminApi when ``admin.enabled``
        self.archive: Any = None
        self.ris: Any = None
        archive_type = vc.registry.find("service", "archive")
        if archive_type is not None:
            self.archive = archive_type.build(vc.archive, self._ctx("", "archive"))
        ris_type = vc.registry.find("service", "ris")
        if ris_type is not None and vc.ris is not None:
            self.ris = ris_type.build(vc.ris, self._ctx("", "ris"))  # after the archive: a merge moves studies
        for spec in vc.channels:
            if spec.config.enabled:
                self.services[spec.config.name] = self._build_channel(spec)

    def _ctx(self, channel: str, component: str) -> BuildContext:
        return BuildContext(
            reactor=self.reactor,
            channel=channel,
            component=component,
            config_dir=self.vc.config_dir,
            data_dir=self.vc.data_dir,
            metrics=self.metrics,
            store=self.store,
            services=self.services,
            jinja_env=self.vc.jinja_env,
            archive=self.archive,
            ris=self.ris,
        )

    def _build_channel(self, spec: Any) -> ChannelService:
        cfg = spec.config
        registry = self.vc.registry
        queues: dict[str, DestinationQueue] = {}
        for dest in spec.destinations:
            ctype = registry.get("destination", dest.config.type)
            connector = ctype.build(dest.connector, self._ctx(cfg.name, dest.config.name))
            queues[dest.config.name] = DestinationQueue(
                cfg.name,
                dest.config.name,
                connector,
                self.store,
                self.reactor,
                dest.config.retry,
                metrics=self.metrics,
                poll_interval=self.vc.root.store.queue_poll_interval,
            )
        source_type = registry.get("source", spec.source.type)
        source = source_type.build(spec.source, self._ctx(cfg.name, "source"))
        return ChannelService(
            spec.compiled,
            source,
            queues,
            self.store,
            self.reactor,
            metrics=self.metrics,
            charset=cfg.charset,
            ack=cfg.ack,
            dedupe=cfg.dedupe,
            prune=cfg.prune,
        )

    @defer.inlineCallbacks
    def start(self):
        """Open the store and the archive, start every channel, then serve /metrics and the admin API."""
        self.store.start()
        if self.archive is not None:
            yield defer.maybeDeferred(self.archive.start)
        if self.ris is not None:
            yield defer.maybeDeferred(self.ris.start)
        for name, service in self.services.items():
            yield service.startService()
            log.info("channel %s started", name)
        m = self.vc.root.metrics
        if m.enabled:
            root = Resource()
            root.putChild(b"metrics", MetricsPage(self.metrics))
            self.metrics_port = self.reactor.listenTCP(m.port, Site(root), interface=m.host)
            log.info("metrics on http://%s:%d/metrics", m.host, self.metrics_port.getHost().port)
        if self.vc.root.admin.enabled:
            from engine.admin.server import AdminApi

            self.admin = AdminApi(self, self.vc.root.admin)
            yield self.admin.start()

    @defer.inlineCallbacks
    def stop(self):
        """Stop channels (sources first), flush the store."""
        if self.admin is not None:
            yield self.admin.stop()
        if self.metrics_port is not None:
            yield self.metrics_port.stopListening()
        for service in reversed(list(self.services.values())):
            if service.running:
                yield service.stopService()
        if self.ris is not None:
            yield defer.maybeDeferred(self.ris.stop)
        if self.archive is not None:
            yield defer.maybeDeferred(self.archive.stop)
        yield self.store.stop()
