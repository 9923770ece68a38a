"""Log lines of the long-running commands: plain text for a terminal, or JSON lines for a
journal or a log shipper (``--log-format json``).

Every qhil logger (``qhil.*``) writes through one handler on stdout, flushed per
line. An event carries its fields in ``extra={"fields": {...}}``; JSON lines put
them at the top level beside ``ts``, ``level``, ``logger`` and ``msg``.

>>> import io, json, logging
>>> stream = io.StringIO()
>>> configure_logging("json", stream=stream)
>>> log_event("session_opened", "session opened", session="00ab", peer="rack-a")
>>> line = json.loads(stream.getvalue())
>>> line["event"], line["session"], line["level"]
('session_opened', '00ab', 'info')
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "configure_logging", "log_event"]

LOG_FORMATS = ("text", "json")
_LOGGER = logging.getLogger("qhil")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, default=str)


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.name.removeprefix('qhil.')}: {record.getMessage()}"


def configure_logging(fmt: str, *, stream: TextIO | None = None) -> None:
    """Send every ``qhil.*`` log line to ``stream`` (stdout) as ``fmt``: one of
    :data:`LOG_FORMATS`. Replaces what an earlier call set up."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {LOG_FORMATS}")
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(_JsonLines() if fmt == "json" else _Text())
    for old in list(_LOGGER.handlers):
        _LOGGER.removeHandler(old)
    _LOGGER.addHandler(handler)
    _LOGGER.setLevel(logging.INFO)
    _LOGGER.propagate = False


def log_event(event: str, msg: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """One structured event: ``msg`` for people, ``fields`` for machines."""
    logging.getLogger("qhil.serve").log(level, msg, extra={"event": event, "fields": fields})
