"""Pydantic models of the engine's own config keys (connectors bring their own)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"24h"``, ``"7d"`` or ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 24h, 7d")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"invalid duration {value!r} (expected e.g. 30s, 5m, 24h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Strict(BaseModel):
    """Base for config models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ComponentConfig(Strict):
    """Base for connector configs; ``type`` selects the registry entry."""

    type: str


class StoreConfig(Strict):
    """Message store settings."""

    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        "NORMAL", description="SQLite synchronous pragma: NORMAL survives kill -9, FULL survives power loss"
    )
    group_commit_max: int = Field(512, ge=1, description="largest number of writes committed together")
    writer: Literal["auto", "inline", "thread"] = Field(
        "auto", description="where commits run: inline in the reactor (SQLite default) or a writer thread"
    )
    queue_poll_interval: Duration = Field(2.0, description="how often idle queues look for rows written elsewhere")


class MetricsConfig(Strict):
    """Prometheus endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9100, ge=0, le=65535)


class SyslogConfig(Strict):
    """Audit records also sent as RFC 5424 syslog over UDP (IHE ATNA style)."""

    host: str = "127.0.0.1"
    port: int = Field(514, ge=1, le=65535)
    app_name: str = Field("radbridge", pattern=r"^[!-~]{1,48}$", description="RFC 5424 APP-NAME")


class AdminConfig(Strict):
    """The admin HTTP API (JSON; engine/admin/openapi.yaml); users come from ``radbridge users`` or the environment."""

    enabled: bool = Field(
        False, description="serve the admin API (no user exists until one is added: every call is 401)"
    )
    host: str = Field("127.0.0.1", description="listen address; loopback unless a TLS proxy fronts it")
    port: int = Field(9180, ge=0, le=65535)
    max_body: int = Field(1_048_576, ge=1024, description="largest request body in bytes (413 above)")
    session_timeout: Duration = Field(28800.0, description="a console session ends this long after login")
    cookie_secure: bool = Field(False, description="mark the session cookie Secure (when served over HTTPS)")
    syslog: SyslogConfig | None = Field(None, description="also send each audit record as syslog (none: store only)")


class LoggingConfig(Strict):
    """Log output (never PHI at INFO or above)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class RetryConfig(Strict):
    """Exponential backoff for a destination."""

    max_attempts: int = Field(10, ge=1, description="attempts before the delivery is set to ERROR")
    initial_delay: Duration = 1.0
    max_delay: Duration = 300.0
    multiplier: float = Field(2.0, ge=1.0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number *attempt* (1-based)."""
        return min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))


class TransformerConfig(Strict):
    """A Jinja template (inline or file) or a mapping plugin."""

    type: str | None = None
    template: str | None = None
    template_file: str | None = None
    plugin: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    output: Literal["hl7", "text"] = "hl7"

    @model_validator(mode="after")
    def _one_source(self) -> TransformerConfig:
        given = [k for k in ("template", "template_file", "plugin") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of template, template_file, plugin")
        if self.type is None:
            self.type = "plugin" if self.plugin else "jinja"
        return self


Filter = str | list[str] | None


class AckConfig(Strict):
    """When and how the source answers."""

    mode: Literal["after_store", "after_delivery"] = "after_store"
    delivery_timeout: Duration = Field(30.0, description="after_delivery: longest wait before AE")


class DedupeConfig(Strict):
    """Duplicate MSH-10 detection per sending application/facility."""

    enabled: bool = True
    window: Duration = 86400.0
    max_keys: int = Field(200_000, ge=1, description="keys held in memory; older ones are looked up in the store")


class PruneConfig(Strict):
    """Message pruning; runs in small batches so the store is never locked for long."""

    max_age: Duration | None = Field(None, description="delete messages older than this (none: keep)")
    keep_errors: bool = Field(True, description="keep messages with an ERROR status")
    interval: Duration = 3600.0
    batch_size: int = Field(500, ge=1, le=10000)


class DestinationConfig(Strict):
    """Engine keys of a destination; the rest belongs to the connector ``type``."""

    name: str = Field(pattern=NAME_PATTERN)
    type: str
    enabled: bool = True
    filter: Filter = None
    transformer: TransformerConfig | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)


DESTINATION_KEYS = frozenset(DestinationConfig.model_fields)


class ChannelConfig(Strict):
    """A channel: source → filter → transformer → destinations."""

    name: str = Field(pattern=NAME_PATTERN)
    enabled: bool = True
    description: str = ""
    charset: str = Field("utf-8", description="codec used when MSH-18 is empty (no platform default)")
    source: dict[str, Any]
    filter: Filter = None
    transformer: TransformerConfig | None = None
    destinations: list[dict[str, Any]] = Field(default_factory=list)
    ack: AckConfig = Field(default_factory=AckConfig)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)


class RetentionConfig(Strict):
    """How long the archive keeps what it stores (deleted in small batches)."""

    max_age: Duration | None = Field(None, description="delete studies (and archived HL7) older than this (none: keep)")
    interval: Duration = Field(3600.0, description="how often the retention sweep runs")
    batch_size: int = Field(100, ge=1, le=10000, description="studies deleted per batch")


class ArchiveConfig(Strict):
    """The filesystem archive of DICOM instances (and HL7 messages routed to it)."""

    root: str | None = Field(None, description="archive folder; default <data_dir>/archive")
    layout: str = Field(
        "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm",
        description="path of an instance under the root, from DICOM keywords (UIDs only: no user-typed text)",
    )
    hl7_layout: str = Field(
        "hl7/{channel}/{date}/{message_id}.hl7", description="path of an archived HL7 message under the root"
    )
    duplicates: Literal["keep_first", "replace", "reject"] = Field(
        "keep_first",
        description="the same SOP Instance UID again: keep the first (success with a warning), replace, or reject",
    )
    fsync: bool = Field(True, description="fsync each file and its folder before answering (off only for tests)")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)


class RootConfig(Strict):
    """The whole config file."""

    data_dir: str = "./data"
    database: str | None = Field(None, description="SQLAlchemy URL; default sqlite under data_dir")
    store: StoreConfig = Field(default_factory=StoreConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    ris: dict[str, Any] = Field(default_factory=dict, description="the RIS core (its keys: ris_core.config.RisConfig)")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    channels: list[dict[str, Any]] = Field(default_factory=list)
    tests: list[dict[str, Any]] = Field(
        default_factory=list, description="channel test cases for `radbridge test` (engine.testing.cases.Case)"
    )
