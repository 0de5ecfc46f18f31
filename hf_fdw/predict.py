"""From quals to predictions: the plain core behind the Multicorn adapter.

``inputs_from_quals`` reads which inputs a query asks for; ``Predictor`` asks
the endpoint once per distinct input (concurrently, in a bounded pool) and
returns rows whose input columns echo the quals exactly, since PostgreSQL
re-checks every qual on the rows it gets back.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from contextlib import contextmanager
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from hf_fdw import cache, interrupts
from hf_fdw.cache import AnswerCache
from hf_fdw.client import InferenceClient, StopSignal
from hf_fdw.errors import HfFdwError
from hf_fdw.media import Media, media_from_value
from hf_fdw.options import EngineSettings, ModelSettings, request_url
from hf_fdw.tasks import AnswerError, Inputs, RawBody, error_in_answer

log = logging.getLogger("hf_fdw")

MEMO_SIZE = 10_000


class QualLike(Protocol):
    field_name: str
    operator: Any
    value: Any


def _values(qual: QualLike) -> list[Any] | None:
    """The values a qual pins its column to, or None if it pins nothing."""
    operator = qual.operator
    if isinstance(operator, tuple):
        name, use_any = operator
        if name == "=" and use_any and isinstance(qual.value, (list, tuple)):
            return list(qual.value)
        if name == "=" and use_any and qual.value is None:
            return []  # = ANY(NULL::text[]) matches nothing
        return None
    if operator == "=":
        return [qual.value]
    return None


def inputs_from_quals(
    quals: Iterable[QualLike], input_columns: Sequence[str]
) -> list[Inputs]:
    """Every distinct tuple of input values the quals ask for, in order.

    ``col = v`` gives one value, ``col IN (...)`` and ``col = ANY(...)`` give
    several; several quals on one column keep the values they share. A NULL
    stays in the list (it becomes a row with a NULL prediction and no
    request). A column that no qual pins is an error, never a request with
    no input.
    """
    wanted: dict[str, list[Any]] = {}
    for qual in quals:
        if qual.field_name not in input_columns:
            continue
        values = _values(qual)
        if values is None:
            continue
        unique = list(dict.fromkeys(values))
        if qual.field_name in wanted:
            keep = set(unique)
            unique = [v for v in wanted[qual.field_name] if v in keep]
        wanted[qual.field_name] = unique

    missing = [column for column in input_columns if column not in wanted]
    if missing:
        names = ", ".join(f'"{column}"' for column in missing)
        example = missing[0]
        raise HfFdwError(
            f"a query on this model must give the input column {names}",
            detail="the model is only asked for the inputs named in WHERE or "
            "in a join; OR and expressions such as lower(col) = ... are not "
            "passed to the model",
            hint=f'add WHERE "{example}" = \'...\', "{example}" IN (...), or '
            f'JOIN another table ON its column = "{example}"',
        )
    return list(itertools.product(*(wanted[c] for c in input_columns)))


def _check_text(value: str, task: str) -> None:
    """Text PostgreSQL can store: no NUL, no lone surrogate."""
    problem = None
    if "\x00" in value:
        problem = "a NUL character, which PostgreSQL text cannot hold"
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problem = "a lone UTF-16 surrogate, which is not valid text"
    if problem:
        raise AnswerError(
            f"the answer for task {task} holds {problem}",
            detail=repr(value[:100]),
            hint="the endpoint sent malformed text; check the model",
        )


@dataclass(frozen=True)
class Prediction:
    """A row's prediction with its score and whole answer (JSON text)."""

    value: Any
    score: float | None
    answer: str | None


@dataclass
class Usage:
    """What one model cost in this backend: readable from SQL."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    errors: int = 0
    seconds: float = 0.0


# Per backend, keyed by (engine, model id, task).
USAGE: dict[tuple[str, str, str], Usage] = {}

POLL_SECONDS = 0.1


class Predictor:
    """Turns input tuples into prediction values for one model."""

    def __init__(
        self,
        engine: EngineSettings,
        model: ModelSettings,
        client: InferenceClient | None = None,
        answers: AnswerCache | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.client = client or InferenceClient(engine)
        self.url = request_url(engine, model)
        self.cache = cache.shared if answers is None else answers
        self.cache_ttl = (
            engine.cache_ttl
            if engine.cache_ttl is not None
            else model.spec.default_cache_ttl
        )
        # Whose key pays for an answer is part of it: a role whose mapping has
        # no key must not be served what another role's key bought.
        key_id = (
            hashlib.sha256(engine.api_key.encode()).hexdigest()[:16]
            if engine.api_key
            else None
        )
        self._model_key = cache.model_key(
            self.url,
            model.model,
            model.task,
            model.parameters,
            model.options,
            model.labels,
            model.candidate_labels,
            model.score_column is not None,
            model.answer_column is not None,
            key_id,
        )
        self.usage = USAGE.setdefault(
            (engine.name, model.model or self.url, model.task), Usage()
        )
        self.failures: list[HfFdwError] = []
        # Answers kept for the transaction when the model has no cache.
        self._memo: OrderedDict[Hashable, Any] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._statement: int | None = None
        self._sent_in_statement = 0

    def forget(self) -> None:
        """Drop the transaction's answers (at the end of each transaction)."""
        self._memo.clear()

    def check_credentials(self) -> None:
        """Refuse to call the hosted router with no key, before any request."""
        if (
            self.engine.is_hosted
            and not self.engine.api_key
            and not self.model.endpoint
        ):
            raise HfFdwError(
                f"engine {self.engine.name!r} has no API key for the hosted "
                "Inference API",
                hint=f"SELECT hf_fdw.set_api_key('{self.engine.name}', "
                "'hf_...'); or point the engine at a local server with "
                "endpoint => 'http://127.0.0.1:8080'",
            )

    def predict_one(self, inputs: Inputs, stop: StopSignal | None = None) -> Any:
        """Ask the endpoint for one input tuple; return what its row needs.

        That is the target value, or, when the table has a score or answer
        column, a ``Prediction`` with those too.
        """
        if self.model.spec.media:
            inputs = (self._media(inputs[0]),) + tuple(inputs[1:])
        body = self.model.spec.build_body(inputs, self.model)
        answer = self._post(body, stop)
        with self._scrubbed():
            if self.model.item_columns:
                return self._items(answer)
            value = self.model.spec.read_answer(answer, inputs, self.model)
        return self._finish(value, answer)

    def predict_group(
        self, group: Sequence[Inputs], stop: StopSignal | None = None
    ) -> list[Any]:
        """Ask for several inputs in one request, where the task can batch.

        The answer must hold one result per input, in order (row-aligned), or
        the whole group fails.
        """
        spec = self.model.spec
        assert spec.build_batch is not None and spec.read_batch is not None
        answer = self._post(spec.build_batch(group, self.model), stop)
        with self._scrubbed():
            results = spec.read_batch(answer, group, self.model)
        return [self._finish(value, value) for value in results]

    def _post(self, body: Any, stop: StopSignal | None) -> Any:
        answer = self.client.post(self.url, body, self.model.model, stop)
        words = error_in_answer(answer)
        if words is not None:
            raise AnswerError(
                "the inference endpoint answered with an error",
                detail=self.client.scrub(words),
                hint="the model could not serve this input; check the model's "
                "task and parameters",
            )
        return answer

    @contextmanager
    def _scrubbed(self) -> Iterator[None]:
        """An unreadable answer is quoted in the error's detail: an endpoint
        that echoes the request headers must not put the key in an error."""
        try:
            yield
        except HfFdwError as exc:
            if exc.detail:
                detail = self.client.scrub(exc.detail)
                exc.detail = detail if len(detail) <= 300 else detail[:300] + "..."
            raise

    def _finish(self, value: Any, answer: Any) -> Any:
        """The value as its column takes it, with score and whole answer."""
        if isinstance(value, str):
            _check_text(value, self.model.task)
        if self.model.value_type == "jsonb":
            value = json.dumps(value)
        if not (self.model.score_column or self.model.answer_column):
            return value
        score = None
        if self.model.score_column and self.model.spec.read_score:
            score = self.model.spec.read_score(answer)
        whole = None
        if self.model.answer_column:
            if isinstance(answer, RawBody):  # an image: described, not copied
                answer = {"content_type": answer.mime, "bytes": len(answer.data)}
            whole = json.dumps(answer)
        return Prediction(value, score, whole)

    def _items(self, answer: Any) -> list[dict[str, Any]]:
        """The rows' fields, one dict per item of the answer."""
        assert self.model.spec.read_items is not None
        items = []
        for item in self.model.spec.read_items(answer, self.model):
            row = {}
            for column in self.model.item_columns:
                value = item.get(column)
                if isinstance(value, str):
                    _check_text(value, self.model.task)
                elif isinstance(value, float) and value.is_integer():
                    value = int(value)  # 12.0 into an integer column
                row[column] = value
            items.append(row)
        return items

    def _media(self, value: Any) -> Media:
        """The image or sound a column value stands for (bytes, or a URL)."""
        return media_from_value(
            value,
            allow_private=self.engine.allow_private_urls,
            max_bytes=self.engine.max_media_bytes,
            timeout=self.engine.timeout,
        )

    def predict(self, batch: Sequence[Inputs]) -> list[Any]:
        """Predict every tuple; NULL inputs give NULL, repeats are asked once.

        Answers come from the backend's cache (or, with none, the
        transaction's), then the endpoint, with up to ``concurrency`` requests in flight. The
        wait is watched for PostgreSQL's cancel flags, so a statement timeout
        or a cancel ends it within about ``POLL_SECONDS``.
        """
        found: dict[Inputs, Any] = {}
        todo: list[tuple[Inputs, Hashable]] = []
        for inputs in dict.fromkeys(batch):
            if None in inputs:
                continue
            key = self._cache_key(inputs)
            answer = self._lookup(key, count=True)
            if answer is cache.MISSING:
                todo.append((inputs, key))
            else:
                found[inputs] = answer

        if todo:
            self.check_credentials()
            self._count_against_cap(len(todo))
            started = time.monotonic()
            retries_before = self.client.retries
            sent_before = self.client.requests_sent
            try:
                answers = self._ask([inputs for inputs, _ in todo])
            finally:
                self.usage.seconds += time.monotonic() - started
                self.usage.retries += self.client.retries - retries_before
                self.usage.requests += self.client.requests_sent - sent_before
            if self.engine.verbose:
                log.info(
                    "hf_fdw: %d request(s) to %s in %.3f s, %d from cache",
                    len(todo),
                    self.url,
                    time.monotonic() - started,
                    len(found),
                )
            for (inputs, key), answer in zip(todo, answers):
                if answer is _FAILED:
                    found[inputs] = None
                    continue
                found[inputs] = answer
                self._store(key, answer)

        return [None if None in inputs else found[inputs] for inputs in batch]

    def _lookup(self, key: Hashable, count: bool = False) -> Any:
        """A remembered answer, or ``cache.MISSING``."""
        if key in self._memo:
            return self._memo[key]
        answer = self.cache.get(key)
        if count and answer is not cache.MISSING:
            self.usage.cache_hits += 1
        return answer

    def _store(self, key: Hashable, answer: Any) -> None:
        """Keep an answer in the cache, or, with no cache, for the transaction."""
        if self.cache_ttl > 0:
            self.cache.put(key, answer, self.cache_ttl)
            return
        self._memo[key] = answer
        while len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)

    def rows(self, quals: Iterable[QualLike]) -> Iterator[dict[str, Any]]:
        """The rows a scan returns for these quals."""
        batch = inputs_from_quals(quals, self.model.input_columns)
        for inputs, value in zip(batch, self.predict(batch)):
            row = dict(zip(self.model.input_columns, inputs))
            if self.model.item_columns:
                # One row per item; a NULL input or a failure gives none.
                for item in value or ():
                    yield {**row, **item}
                continue
            if isinstance(value, Prediction):
                row[self.model.target_column] = value.value
                if self.model.score_column:
                    row[self.model.score_column] = value.score
                if self.model.answer_column:
                    row[self.model.answer_column] = value.answer
            else:
                row[self.model.target_column] = value
            yield row

    def _cache_key(self, inputs: Inputs) -> Hashable:
        """Bytes (images, sounds) are keyed by their digest, not kept twice."""
        return (
            self._model_key,
            tuple(
                hashlib.sha256(bytes(value)).hexdigest()
                if isinstance(value, (bytes, bytearray, memoryview))
                else value
                for value in inputs
            ),
        )

    def _ask(self, todo: list[Inputs]) -> list[Any]:
        """Send the requests in the pool while watching for a cancel.

        At most twice ``concurrency`` requests are queued at a time, refilled
        as they finish, so a statement with 100 000 inputs holds no more than
        a window of futures and each wait looks at that window only.
        """
        stop = StopSignal()
        pool = self._executor()
        size = self.engine.batch_size if self.model.spec.build_batch else 1
        groups = [todo[i : i + size] for i in range(0, len(todo), size)]
        call = self.predict_group if size > 1 else self._predict_alone
        results: list[list[Any] | None] = [None] * len(groups)
        window = 2 * self.engine.concurrency
        flying: dict[Any, int] = {}
        queued = 0
        try:
            while queued < len(groups) or flying:
                while queued < len(groups) and len(flying) < window:
                    flying[pool.submit(call, groups[queued], stop)] = queued
                    queued += 1
                done, _ = wait(
                    list(flying), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED
                )
                reason = interrupts.pending()
                if reason:
                    raise HfFdwError(
                        reason,
                        detail="hf_fdw stopped waiting for the inference endpoint",
                    )
                for future in done:
                    index = flying.pop(future)
                    error = future.exception()
                    if error is None:
                        results[index] = future.result()
                        continue
                    error = self._user_error(error)
                    self.usage.errors += 1
                    if self.engine.on_error == "raise":
                        raise error
                    self.failures.append(error)
                    results[index] = [_FAILED] * len(groups[index])
        except BaseException:
            stop.set()
            for future in flying:
                future.cancel()
            if any(not future.done() for future in flying):
                # Requests still in flight end on their own (the engine's
                # timeout); the next statement gets a fresh pool.
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            raise

        return [answer for group in results for answer in group or ()]

    def _predict_alone(self, group: Sequence[Inputs], stop: StopSignal) -> list[Any]:
        return [self.predict_one(group[0], stop)]

    def _user_error(self, error: BaseException | None) -> HfFdwError:
        if isinstance(error, HfFdwError):
            return error
        return HfFdwError(
            "hf_fdw failed while asking the inference endpoint",
            detail=self.client.scrub(f"{type(error).__name__}: {error}")[:300],
        )

    def _count_against_cap(self, count: int) -> None:
        """Refuse a statement that would send more than ``max_requests``."""
        statement = interrupts.statement_id()
        if statement is None or statement != self._statement:
            self._statement = statement
            self._sent_in_statement = 0
        if self._sent_in_statement + count > self.engine.max_requests:
            raise HfFdwError(
                f"this statement would send more than {self.engine.max_requests} "
                f"requests to model {self.model.model or self.url}",
                detail=f"{self._sent_in_statement} sent so far, {count} more needed",
                hint="ask for fewer rows, or raise the cap: ALTER FOREIGN TABLE "
                "... OPTIONS (ADD max_requests '100000') (SET if it is already "
                "set), or the engine option max_requests",
            )
        self._sent_in_statement += count

    def plan(self, batch: Sequence[Inputs]) -> tuple[int, int]:
        """How many distinct non-NULL inputs a batch has, and how many are cached."""
        distinct = [inputs for inputs in dict.fromkeys(batch) if None not in inputs]
        cached = sum(
            self._lookup(self._cache_key(inputs)) is not cache.MISSING
            for inputs in distinct
        )
        return len(distinct), cached

    def take_failures(self) -> list[HfFdwError]:
        """The errors that on_error => null turned into NULLs, once."""
        failures, self.failures = self.failures, []
        return failures

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.engine.concurrency, thread_name_prefix="hf_fdw"
            )
        return self._pool


_FAILED = object()
