"""Go's duration syntax (``30m``, ``1h30m``, ``1.5s``), as etcd's duration flags take it."""

from __future__ import annotations

import re

_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Seconds in a Go duration; ``0`` alone is allowed, as in Go. Raises ValueError."""
    text = value.strip()
    if text == "0":
        return 0.0
    pos, seconds = 0, 0.0
    for m in _TERM.finditer(text):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{value!r} is not a duration like 30s, 5m or 1h30m")
    return seconds
