"""Structured logs: one event per line, with the member's name; JSON on request.

``FLOTILLA_LOG_FORMAT=json`` switches to one JSON object per line (for log pipelines);
``FLOTILLA_LOG_LEVEL`` sets the level (default INFO). Structured fields are passed as
``extra={"fields": {...}}`` (see ``flotilla.node.events``): top-level keys in JSON,
``key=value`` pairs after the message in text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time


class _Text(logging.Formatter):
    def __init__(self, member: str) -> None:
        super().__init__()
        self.member = member

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname:<5} {self.member} "
        line += record.getMessage()
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(v: object) -> str:
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v) or "-"
    return str(v).lower() if isinstance(v, bool) else str(v)


class _Json(logging.Formatter):
    def __init__(self, member: str) -> None:
        super().__init__()
        self.member = member

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "member": self.member,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _not_a_cancelled_call(record: logging.LogRecord) -> bool:
    """grpc.aio logs a call its server cancelled (a peer's stream still open when the member
    stops) as an unhandled exception with a traceback. A cancelled call is how a stop ends
    calls, not an error; it is left out of the log."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (record.name.startswith("grpc") and isinstance(exc, asyncio.CancelledError))


def setup_logging(member: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_not_a_cancelled_call)
    fmt = os.environ.get("FLOTILLA_LOG_FORMAT", "text")
    handler.setFormatter(_Json(member) if fmt == "json" else _Text(member))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("FLOTILLA_LOG_LEVEL", "INFO").upper())
