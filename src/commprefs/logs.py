"""Structured logs: one JSON object a line, with the fields a handler passed in `extra`.

Every request writes an access line, so that line must be cheap: `AccessLog` writes the lines of every request
answered in one turn of the event loop (api/pipeline.py) together, as one record of the `commprefs.access`
logger whose message is those lines, formatted with the keys any line gets here. One record a request through
the standard library (making the record, the handler's lock, a write and a flush each) was a sixth of a
`/healthz` call. For the other records, `quiet_record_attributes` turns off what the standard library gathers
for each record and no formatter here prints (the caller's file and line, thread, process and multiprocessing
names; Python's logging documentation, "Optimization"), and the time is formatted once a second.
"""

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
# A record whose message is lines formatted already (AccessLog's batches) carries this attribute.
PREFORMATTED = "preformatted_lines"


def quiet_record_attributes() -> None:
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (findCaller) per record


class _Stamp:
    """A time's `ts` text (local time, to the second), formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(created))
        return self._text


def entry(stamp: str, level: str, logger: str, message: str) -> dict[str, Any]:
    """The keys every log line starts with, before the record's own fields."""
    return {"ts": stamp, "level": level, "logger": logger, "msg": message}


class JsonFormatter(logging.Formatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet_record_attributes()  # here, so that every worker process (each builds its formatter) does it
        self._stamp = _Stamp()

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        if fields.get(PREFORMATTED):
            return record.getMessage()
        line = entry(self._stamp(record.created), record.levelname.lower(), record.name, record.getMessage())
        for key in fields.keys() - _STANDARD:
            line[key] = fields[key]
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class AccessLog:
    """The access log: `write` logs the lines of many requests (each with the keys any line gets here) as one
    record."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._stamp = _Stamp()

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, requests: Iterable[dict[str, Any]]) -> None:
        start = entry(self._stamp(time.time()), "info", self.logger.name, "request")
        lines = [orjson.dumps(start | fields, default=str).decode() for fields in requests]
        if lines:
            self.logger.info("\n".join(lines), extra={PREFORMATTED: True})

    @staticmethod
    def entries(record: logging.LogRecord) -> list[dict[str, Any]]:
        """The requests a record of this log holds (for tests reading records rather than lines)."""
        if record.__dict__.get(PREFORMATTED):
            return [orjson.loads(line) for line in record.getMessage().splitlines()]
        return []


def log_config(level: str) -> dict[str, Any]:
    """A logging.dictConfig for the server (uvicorn applies it in every worker process)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            # The webhook sender's HTTP client would log each receiver's URL, which often holds a secret;
            # deliveries and their failures are in the delivery log (GET .../webhooks/{id}/deliveries).
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
