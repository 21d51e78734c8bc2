"""Structured logs: one JSON object a line, with the fields a handler passed in `extra`.

Every request writes an access line, so a record must be cheap: `quiet_record_attributes` turns off what
the standard library gathers for each record and no formatter here prints (the caller's file and line,
thread, process and multiprocessing names; Python's logging documentation, "Optimization"), and the
formatter formats each second's time once.
"""

import logging
import time
from typing import Any

import orjson

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


def quiet_record_attributes() -> None:
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (findCaller) per record


class JsonFormatter(logging.Formatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet_record_attributes()  # here, so that every worker process (each builds its formatter) does it
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        entry: dict[str, Any] = {
            "ts": self._stamp,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__
        for key in fields.keys() - _STANDARD:
            entry[key] = fields[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


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
