"""Property-based fuzzing: no answer and no option makes anything but a clear error.

Whatever an endpoint sends back, and whatever a user writes in OPTIONS, the
core either gives a value or raises HfFdwError (which PostgreSQL shows as an
ERROR with DETAIL and HINT) — never a KeyError, TypeError or the like, which
would reach the user as a Python traceback.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hf_fdw.errors import HfFdwError  # noqa: E402
from hf_fdw.options import (  # noqa: E402
    TABLE_OPTIONS,
    parse_engine,
    parse_model,
)
from hf_fdw.tasks import TASKS, error_in_answer  # noqa: E402

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["label", "score", "LABEL_0", "POSITIVE", "[MASK]"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "label",
                    "score",
                    "labels",
                    "scores",
                    "answer",
                    "sequence",
                    "token_str",
                    "summary_text",
                    "translation_text",
                    "generated_text",
                    "text",
                    "box",
                    "entity_group",
                    "error",
                    "xmin",
                    "ymin",
                    "xmax",
                    "ymax",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)

COLUMNS = {
    "text": SimpleNamespace(type_name="text"),
    "b": SimpleNamespace(type_name="text"),
    "out": SimpleNamespace(type_name="text"),
}


def model_for(task: str, labels: Any) -> Any:
    options = {
        "task": task,
        "model": "acme/x",
        "input_column2": "b",
        "context_column": "b",
        "target_column": "out",
    }
    if task == "zero-shot-classification":
        options["candidate_labels"] = '["a", "b"]'
    if labels is not None and task in (
        "text-classification",
        "image-classification",
        "audio-classification",
    ):
        options["labels"] = json.dumps(labels)
    columns = dict(COLUMNS)
    columns["out"] = SimpleNamespace(type_name=TASKS[task].value_type)
    if TASKS[task].media:
        columns["text"] = SimpleNamespace(type_name="bytea")
    return parse_model(options, columns)


@settings(max_examples=300, deadline=None)
@given(
    task=st.sampled_from(sorted(TASKS)),
    answer=json_values,
    labels=st.none() | st.just(["neg", "pos"]) | st.just({"LABEL_0": "a"}),
)
def test_any_answer_gives_a_value_or_a_clear_error(
    task: str, answer: Any, labels: Any
) -> None:
    model = model_for(task, labels)
    try:
        error_in_answer(answer)
        model.spec.read_answer(answer, ("a [MASK] b", "b"), model)
        if model.spec.read_score:
            model.spec.read_score(answer)
    except HfFdwError as error:
        assert error.message


option_values = st.text(max_size=12) | st.sampled_from(
    [
        "text-classification",
        "fill-mask",
        "zero-shot-classification",
        "[]",
        "{}",
        '["a"]',
        '{"a": 1}',
        "null",
        "1e999",
        "-1",
        "true",
        "http://127.0.0.1:9/x",
        "https://api-inference.huggingface.co/x",
        "text",
        "out",
        "b",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    options=st.dictionaries(
        st.sampled_from(TABLE_OPTIONS + ("engine_options", "engine_endpoint", "zz")),
        option_values,
        max_size=6,
    )
)
def test_any_options_give_settings_or_a_clear_error(options: dict[str, str]) -> None:
    try:
        parse_model(options, COLUMNS)
        parse_engine(options, environ={})
    except HfFdwError as error:
        assert error.message
