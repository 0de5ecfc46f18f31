"""The Multicorn adapter: options and quals in, rows out.

Everything that knows about tasks, HTTP and answers lives in the plain core
(``options``, ``tasks``, ``client``, ``predict``); this class only translates
between Multicorn's calls and that core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from multicorn import ForeignDataWrapper
from multicorn.utils import DEBUG, INFO, WARNING, log_to_postgres

from hf_fdw import cache
from hf_fdw.errors import HfFdwError
from hf_fdw.options import parse_engine, parse_model
from hf_fdw.predict import USAGE, Predictor, inputs_from_quals


UNBOUNDED_ROWS = 10_000_000


class _PostgresLogHandler(logging.Handler):
    """Send the core's log lines to PostgreSQL: DEBUG1, or INFO when verbose.

    PostgreSQL's logging is not thread-safe: lines logged by the request pool's
    worker threads are dropped rather than reported from the wrong thread.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        level = INFO if record.levelno >= logging.INFO else DEBUG
        try:
            log_to_postgres(self.format(record), level)
        except Exception:  # logging must never break a query
            pass


_logger = logging.getLogger("hf_fdw")
if not _logger.handlers:
    _logger.addHandler(_PostgresLogHandler())
    _logger.setLevel(logging.DEBUG)
    _logger.propagate = False


class HuggingFaceFDW(ForeignDataWrapper):
    """A foreign table whose rows are a Hugging Face model's predictions."""

    def __init__(self, options: Mapping[str, str], columns: Mapping[str, Any]) -> None:
        super().__init__(options, columns)
        self.model = parse_model(options, columns)
        self.engine = parse_engine(options)
        self.predictor = Predictor(self.engine, self.model)

    def get_rel_size(self, quals: list[Any], columns: list[str]) -> tuple[int, int]:
        # One row per input tuple the quals name. A scan that names none cannot
        # run at all, so it is priced out of reach: the planner then prefers
        # the parameterized path of a join, one lookup per outer row.
        try:
            rows = len(inputs_from_quals(quals, self.model.input_columns))
        except HfFdwError:
            rows = UNBOUNDED_ROWS
        return (max(rows, 1), 32 * max(len(columns), 1))

    def get_path_keys(self) -> list[tuple[tuple[str, ...], int]]:
        return [(self.model.input_columns, 1)]

    def execute(
        self, quals: list[Any], columns: Any, sortkeys: Any = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        # A generator: rows go to PostgreSQL one by one, never all at once.
        return self.predictor.rows(quals)

    def end_scan(self) -> None:
        # One summary per statement scan, however many rescans a join made.
        failures = self.predictor.take_failures()
        if failures:
            first = failures[0]
            log_to_postgres(
                f"hf_fdw: {len(failures)} prediction(s) failed and were set to "
                "NULL (on_error 'null')",
                WARNING,
                detail=f"first failure: {first.message}"
                + (f": {first.detail}" if first.detail else ""),
            )

    def explain(
        self,
        quals: list[Any],
        columns: Any,
        sortkeys: Any = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        host = urlsplit(self.predictor.url).netloc
        lines = [
            f"hf_fdw: task {self.model.task}, model {self.model.model or '-'}, "
            f"endpoint {host}"
        ]
        try:
            batch = inputs_from_quals(quals, self.model.input_columns)
        except HfFdwError:
            batch = None
        if batch is not None and all(
            isinstance(value, (str, bytes, type(None)))
            for inputs in batch
            for value in inputs
        ):
            count, cached = self.predictor.plan(batch)
            lines.append(
                f"hf_fdw: {count} input(s), {cached} cached, {count - cached} to send"
            )
        else:
            lines.append("hf_fdw: one request per distinct input from the join")
        return lines

    @property
    def rowid_column(self) -> str:
        raise HfFdwError(
            "a model's predictions cannot be changed",
            hint="keep your data in a table of yours and JOIN it with the model",
        )

    def begin(self, serializable: Any) -> None:
        self.predictor.forget()

    def commit(self) -> None:
        self.predictor.forget()

    def rollback(self) -> None:
        self.predictor.forget()
        self.predictor.take_failures()


class BackendStateFDW(ForeignDataWrapper):
    """hf_fdw's own state in this backend, as the tables hf_fdw.usage and
    hf_fdw._cache (the latter behind hf_fdw.clear_cache() and hf_fdw.cache)."""

    def __init__(self, options: Mapping[str, str], columns: Mapping[str, Any]) -> None:
        super().__init__(options, columns)
        self.view = options.get("view")
        if self.view not in ("usage", "cache"):
            raise HfFdwError(
                "option view must be 'usage' or 'cache'",
                detail=f"got {self.view!r}",
            )

    def get_rel_size(self, quals: list[Any], columns: list[str]) -> tuple[int, int]:
        return (10, 64)

    def execute(
        self, quals: list[Any], columns: Any, sortkeys: Any = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        if self.view == "usage":
            return iter(
                [
                    {
                        "engine": engine,
                        "model": model,
                        "task": task,
                        "requests": usage.requests,
                        "retries": usage.retries,
                        "cache_hits": usage.cache_hits,
                        "errors": usage.errors,
                        "seconds": round(usage.seconds, 6),
                    }
                    for (engine, model, task), usage in sorted(USAGE.items())
                ]
            )
        action = next(
            (q.value for q in quals if q.field_name == "action" and q.operator == "="),
            "status",
        )
        entries, size = len(cache.shared), cache.shared.bytes
        if action == "clear":
            cache.shared.clear()
        elif action != "status":
            raise HfFdwError(
                f"unknown cache action {action!r}", hint="use status or clear"
            )
        return iter([{"action": action, "entries": entries, "bytes": size}])
