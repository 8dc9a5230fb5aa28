"""Structured JSON logs: one JSON object per line, with the decision's fields at top level."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

LOGGER = "kdash_hub.services.culler"
log = logging.getLogger(LOGGER)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with `fields` (kept on the record as `record.fields` for tests)."""
    log.log(level, event, extra={"event": event, "fields": fields})


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        if getattr(record, "event", None) and record.getMessage() != record.event:
            out["message"] = record.getMessage()
        out.update(getattr(record, "fields", None) or {})
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in ("event", "fields"):
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_json_logging(level: int | str = logging.INFO) -> None:
    """Send the culler's logs to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
