"""Structured JSON logs with the request id on every line; message text, documents, tokens and cookies never logged."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

import structlog

request_id_var: ContextVar[str | None] = ContextVar("enclave_request_id", default=None)

# Keys whose values must never reach a log line, whatever a caller passes.
_FORBIDDEN_KEYS = frozenset(
    {"text", "content", "message_text", "question", "answer", "document_text", "token", "tokens",
     "cookie", "cookies", "authorization", "password", "secret", "id_token", "access_token", "code"}
)


def _add_request_id(_logger: object, _name: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    rid = request_id_var.get()
    if rid is not None:
        event_dict.setdefault("request_id", rid)
    return event_dict


def _redact(_logger: object, _name: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    for key in list(event_dict):
        if key.lower() in _FORBIDDEN_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    # Looked up at each call, so a replaced sys.stderr (test capture, daemonising) is always the one written to.
    return structlog.PrintLogger(file=sys.stderr)


class _StderrHandler(logging.StreamHandler):
    """A stream handler that always writes to the current sys.stderr."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        _redact,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Route the standard library's loggers (uvicorn, sqlalchemy, httpx...) through the same JSON renderer.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                                                  structlog.processors.JSONRenderer()]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx2 and openai: the SDK logs every request to the model server at INFO, on the path to the first token.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "uvicorn.access", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
