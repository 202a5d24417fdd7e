"""Shared pynetdicom setup: presentation contexts, TCP_NODELAY, TLS contexts, status helpers."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, build_context

# Receive C-STORE datasets straight to a file and send files without decoding them
# (DESIGN.md §3.6: large instances are never held whole in memory).
_config.STORE_RECV_CHUNKED_DATASET = True
_config.STORE_SEND_CHUNKED_DATASET = True
# pynetdicom logs the identifiers of C-FIND/C-MOVE/C-GET requests (patient names, ids) at INFO.
_config.LOG_REQUEST_IDENTIFIERS = False
# ... and formats every C-FIND response identifier (pretty_dataset) whatever the log level: off too.
_config.LOG_RESPONSE_IDENTIFIERS = False
# pynetdicom's "standard" handlers describe every PDU and DIMSE message for its logger, formatting
# fields of each command set whatever the log level: a large share of the CPU per stored instance.
_config.LOG_HANDLER_LEVEL = "none"

#: Every storage SOP class with every transfer syntax pynetdicom knows: instances are kept as
#: received, never transcoded, so the SCP accepts whatever the sender proposes.
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(cx.abstract_syntax for cx in AllStoragePresentationContexts)


def storage_contexts() -> list[Any]:
    """Supported presentation contexts for storage: all storage SOP classes × all transfer syntaxes."""
    return [build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in STORAGE_SOP_CLASSES]


def set_nodelay(sock: Any) -> None:
    """Disable Nagle on a DICOM socket (pynetdicom leaves it on: each small PDU would wait ~40 ms)."""
    raw = getattr(sock, "socket", sock)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # closed already, or not TCP


def status_class(status: int) -> str:
    """``success``, ``warning``, ``pending`` or ``failure`` for a DIMSE status value (PS3.7 C)."""
    if status == 0x0000:
        return "success"
    if status in (0xFF00, 0xFF01):
        return "pending"
    if status == 0x0001 or (status >> 12) == 0xB or status == 0x0107 or status == 0x0116:
        return "warning"
    return "failure"


def ssl_server_context(cfg: Any, base: Path) -> ssl.SSLContext:
    """A stdlib TLS server context (what pynetdicom wraps sockets with) from a ``TLSServerConfig``.

    With ``ca`` set, client certificates are checked against it: required (DICOM TLS, PS3.15 B.1)
    unless ``require_client_cert`` is false, then optional but still verified when presented.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(base / cfg.cert), str(base / cfg.key))
    if cfg.ca:
        ctx.load_verify_locations(str(base / cfg.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.client_cert_required else ssl.CERT_OPTIONAL
    return ctx


def ssl_client_context(cfg: Any, base: Path) -> ssl.SSLContext:
    """A stdlib TLS client context from a ``TLSClientConfig``: server checked unless ``verify`` is false."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(base / cfg.ca) if cfg.ca else None)
    if cfg.cert:
        ctx.load_cert_chain(str(base / cfg.cert), str(base / cfg.key) if cfg.key else None)
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
