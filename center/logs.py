"""Logging set-up for the envwatch commands: human-readable lines, or one JSON object per line.

    configure_logging(json=settings.center.log_json, level="INFO")
    log.warning("batch rejected", extra={"station": "MN1", "lines": 12})

JSON records: {"ts": "2024-05-01T08:00:00.123Z", "level": "WARNING", "logger": "ingest.consumer",
"msg": "batch rejected", "station": "MN1", "lines": 12}, plus "exc" (the formatted traceback) when
an exception is logged. Only the standard library: nothing to install for log shippers to work.
"""

from __future__ import annotations

import json as _json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_BASE_KEYS = ("ts", "level", "logger", "msg")
# Libraries that log every HTTP request at INFO (at INFO the ingest would log each write), and
# APScheduler, which logs every job run and every job added (detect/schedule.py): each at the
# level below which it is quieted. A run missed by more than its grace still warns
# (apscheduler.executors); the scheduler's only warning, a fire skipped while the kind's previous
# run still goes, is the schedule working as meant (one run per kind at a time, late ones coalesce).
_CHATTY = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "urllib3": logging.WARNING,
           "apscheduler": logging.WARNING, "apscheduler.scheduler": logging.ERROR}
_HANDLER_MARK = "_envwatch_handler"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with `extra=`, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


def _ts(record: logging.LogRecord) -> str:
    t = datetime.fromtimestamp(record.created, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ms), level, logger, msg, extra fields, exc/stack."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _ts(record), "level": record.levelname, "logger": record.name,
                               "msg": record.getMessage()}
        for k, v in extra_fields(record).items():
            # An extra named like a base key must not overwrite it; keep it under another name.
            out[f"{k}_" if k in _BASE_KEYS else k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # default=str: a datetime or Path in `extra` must not lose the whole record.
        return _json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`2024-05-01T08:00:00.123Z WARNING ingest.consumer: msg key=value ...` for terminals."""

    def format(self, record: logging.LogRecord) -> str:
        extras = "".join(f" {k}={v!r}" if isinstance(v, str) else f" {k}={v}" for k, v in extra_fields(record).items())
        line = f"{_ts(record)} {record.levelname} {record.name}: {record.getMessage()}{extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure_logging(json: bool = False, level: int | str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send all logging to `stream` (default stderr) as JSON lines or text; returns the handler.

    Calling it again replaces the handler it installed before (not anyone else's), so a command
    can switch to JSON once the config has been read.
    """
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name, quiet in _CHATTY.items():
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else quiet)
    return handler
