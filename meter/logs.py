"""Logs on stderr: JSON lines for machines (the default), or short text lines for people.

`METER_LOG_FORMAT` picks one; unset, a terminal gets text and anything else JSON. Records of other
libraries (stripe, apscheduler, aiohttp, asyncio…) show from WARNING up unless the level is debug.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

FORMATS = ("json", "text")
# Loggers of this project; every other logger belongs to a library.
OWN_LOGGERS = frozenset({"meter", "aggregator", "reporter", "evaluator"})

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extra(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """`12:04:05 WARNING reporter.send: message key=value`: local time, the level unless info."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f" {record.levelname}"
        fields = "".join(f" {k}={_text_value(v)}" for k, v in _extra(record).items())
        line = f"{stamp}{level} {record.name}: {record.getMessage()}{fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if text and not any(c.isspace() for c in text) else repr(text)


class _LibraryFloor(logging.Filter):
    """Lets a library's records through only from `floor` up; this project's always."""

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.floor = floor

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.floor or record.name.split(".", 1)[0] in OWN_LOGGERS


def resolve_format(fmt: str | None, stream: TextIO) -> str:
    """The format asked for, else text on a terminal and JSON anywhere else."""
    if fmt is not None:
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup(level: str, fmt: str | None = None, stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr) as JSON or text lines."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    text = resolve_format(fmt, stream) == "text"
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    debug = root.level <= logging.DEBUG
    handler.addFilter(_LibraryFloor(logging.DEBUG if debug else logging.WARNING))
    # One line per request at high throughput costs more than it tells; metrics cover it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The stripe SDK logs whole request and response bodies at debug level: customers' emails,
    # SetupIntent client secrets, session URLs. Its info lines (method, path, status) are enough.
    logging.getLogger("stripe").setLevel(logging.INFO if debug else logging.WARNING)
