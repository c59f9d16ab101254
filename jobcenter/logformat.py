"""The two log formats: plain text for a terminal, one JSON object per line for collectors.

Log collectors (Loki, CloudWatch, Datadog...) index fields rather than parse text. Each
JSON line carries time, level, logger and message, the exception when there is one, and
any `extra={...}` fields the caller passed, among them the sync's ids on every line of a
sync (`sync_run`, ...: jobcenter/logcontext.py) and the fields of `providers.http`'s
request lines. The plain format shows the sync's ids in brackets after the logger's
name. Messages are written as the code logged them: the HTTP client and the sync engine
redact credentials before they log, and nothing here adds request headers or settings.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from jobcenter.logcontext import FIELDS as SYNC_FIELDS

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as a single line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s%(sync_fields)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """Time, level, logger, the sync's ids when the line belongs to a sync, message:
    `... INFO jobcenter.sync [sync_run=12 sync_account=3 sync_provider=<slug>]: ...`."""

    def __init__(self, fmt: str = PLAIN_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{name}={record.__dict__[name]}" for name in SYNC_FIELDS if name in record.__dict__
        )
        # A copy: other handlers format the same record, and must not see this field.
        shown = copy.copy(record)
        shown.sync_fields = f" [{fields}]" if fields else ""
        return super().formatMessage(shown)


def logging_config(log_format: str, root_level: str, request_level: str = "") -> dict[str, Any]:
    """settings.LOGGING: one console handler in `log_format`, the root at `root_level`.

    `request_level` (JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL) sets the level of
    `providers.http` alone: DEBUG shows every provider request whatever the root's
    level. urllib3 stays at INFO: its DEBUG lines repeat each request's URL unredacted,
    where the client's own line redacts it.
    """
    request_level = request_level.strip().upper()
    if request_level not in {"", "DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ImproperlyConfigured(
            "JOBCENTER_PROVIDER_REQUEST_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
            f"not {request_level!r}."
        )
    loggers: dict[str, dict[str, str]] = {
        "django.db.backends": {"level": "WARNING"},
        "urllib3": {"level": "INFO"},
    }
    if request_level:
        loggers["providers.http"] = {"level": request_level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"()": "jobcenter.logformat.PlainFormatter"},
            "json": {"()": "jobcenter.logformat.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": root_level},
        "loggers": loggers,
    }
