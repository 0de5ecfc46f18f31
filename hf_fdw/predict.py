"""From quals to predictions: the plain core behind the Multicorn adapter.

``inputs_from_quals`` reads which inputs a query asks for; ``Predictor`` asks
the endpoint once per distinct input (concurrently, in a bounded pool) and
returns rows whose input columns echo the quals exactly, since PostgreSQL
re-checks every qual on the rows it gets back.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from hf_fdw.client import InferenceClient
from hf_fdw.errors import HfFdwError
from hf_fdw.options import EngineSettings, ModelSettings, request_url
from hf_fdw.tasks import AnswerError, Inputs, error_in_answer

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
            hint=f"add WHERE \"{example}\" = '...', \"{example}\" IN (...), or "
            f"JOIN another table ON its column = \"{example}\"",
        )
    return list(itertools.product(*(wanted[c] for c in input_columns)))


class Predictor:
    """Turns input tuples into prediction values for one model."""

    def __init__(
        self,
        engine: EngineSettings,
        model: ModelSettings,
        client: InferenceClient | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.client = client or InferenceClient(engine)
        self.url = request_url(engine, model)
        self._memo: OrderedDict[Inputs, Any] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    def forget(self) -> None:
        """Drop remembered answers (at the end of each transaction)."""
        self._memo.clear()

    def check_credentials(self) -> None:
        """Refuse to call the hosted router with no key, before any request."""
        if self.engine.is_hosted and not self.engine.api_key and not self.model.endpoint:
            raise HfFdwError(
                f"engine {self.engine.name!r} has no API key for the hosted "
                "Inference API",
                hint=f"SELECT hf_fdw.set_api_key('{self.engine.name}', "
                "'hf_...'); or point the engine at a local server with "
                "endpoint => 'http://127.0.0.1:8080'",
            )

    def predict_one(self, inputs: Inputs) -> Any:
        """Ask the endpoint for one input tuple and read its answer."""
        body = self.model.spec.build_body(inputs, self.model)
        answer = self.client.post(self.url, body, self.model.model)
        words = error_in_answer(answer)
        if words is not None:
            raise AnswerError(
                "the inference endpoint answered with an error",
                detail=self.client.scrub(words),
                hint="the model could not serve this input; check the model's "
                "task and parameters",
            )
        try:
            return self.model.spec.read_answer(answer, inputs, self.model)
        except HfFdwError as exc:
            # An unreadable answer is quoted in the detail: an endpoint that
            # echoes the request headers must not put the key in an error.
            if exc.detail:
                detail = self.client.scrub(exc.detail)
                exc.detail = detail if len(detail) <= 300 else detail[:300] + "..."
            raise

    def predict(self, batch: Sequence[Inputs]) -> list[Any]:
        """Predict every tuple; NULL inputs give NULL, repeats are asked once."""
        found: dict[Inputs, Any] = {}
        todo: list[Inputs] = []
        for inputs in dict.fromkeys(batch):
            if None in inputs:
                continue
            if inputs in self._memo:
                found[inputs] = self._memo[inputs]
            else:
                todo.append(inputs)

        if todo:
            self.check_credentials()
            log.debug("hf_fdw: %d request(s) to %s", len(todo), self.url)
            if len(todo) == 1 or self.engine.concurrency == 1:
                answers = [self.predict_one(inputs) for inputs in todo]
            else:
                answers = list(self._executor().map(self.predict_one, todo))
            for inputs, answer in zip(todo, answers):
                found[inputs] = answer
                self._remember(inputs, answer)

        return [None if None in inputs else found[inputs] for inputs in batch]

    def rows(self, quals: Iterable[QualLike]) -> Iterator[dict[str, Any]]:
        """The rows a scan returns for these quals."""
        batch = inputs_from_quals(quals, self.model.input_columns)
        for inputs, value in zip(batch, self.predict(batch)):
            row = dict(zip(self.model.input_columns, inputs))
            row[self.model.target_column] = value
            yield row

    def _remember(self, inputs: Inputs, answer: Any) -> None:
        self._memo[inputs] = answer
        self._memo.move_to_end(inputs)
        while len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.engine.concurrency, thread_name_prefix="hf_fdw"
            )
        return self._pool
