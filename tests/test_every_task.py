"""Every task through SQL: the target value, the score and the whole answer.

One table per task with the prediction, a score column (where the task has a
score) and a whole-answer column, queried with a real input against the
scripted endpoint answering in the hosted API's shape.
"""

from __future__ import annotations

from typing import Any

import pytest
from fix_http import Reply
from test_media_tasks import png, wav

from hf_fdw.tasks import TASKS

psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")

PICTURE = png()
SOUND = wav()

# task: (inputs by column, answer, target value, score or None)
CASES: dict[str, tuple[dict[str, Any], Any, Any, float | None]] = {
    "text-classification": (
        {"text": "I like you. I love you"},
        [
            [
                {"label": "POSITIVE", "score": 0.9999},
                {"label": "NEGATIVE", "score": 0.0001},
            ]
        ],
        "POSITIVE",
        0.9999,
    ),
    "zero-shot-classification": (
        {"text": "refund me"},
        [{"label": "refund", "score": 0.9}, {"label": "faq", "score": 0.1}],
        "refund",
        0.9,
    ),
    "sentence-similarity": (
        {"text": "That is a happy person", "other": "That is a happy dog"},
        [0.6946],
        0.6946,
        0.6946,
    ),
    "question-answering": (
        {"text": "What's my name?", "context": "My name is Clara"},
        {"answer": "Clara", "score": 0.93, "start": 11, "end": 16},
        "Clara",
        0.93,
    ),
    "summarization": (
        {"text": "A long text."},
        [{"summary_text": "Short."}],
        "Short.",
        None,
    ),
    "text-generation": (
        {"text": "Once"},
        [{"generated_text": "Once upon"}],
        "Once upon",
        None,
    ),
    "fill-mask": (
        {"text": "Paris is the [MASK] of France."},
        [
            {
                "sequence": "paris is the capital of france.",
                "score": 0.99,
                "token": 3007,
                "token_str": "capital",
            }
        ],
        "paris is the capital of france.",
        0.99,
    ),
    "translation": (
        {"text": "Hello"},
        [{"translation_text": "Bonjour"}],
        "Bonjour",
        None,
    ),
    "feature-extraction": ({"text": "x"}, [0.5, -0.25], [0.5, -0.25], None),
    "token-classification": (
        {"text": "Clara lives in Berkeley"},
        [{"entity_group": "PER", "score": 0.99, "word": "Clara", "start": 0, "end": 5}],
        [{"entity_group": "PER", "score": 0.99, "word": "Clara", "start": 0, "end": 5}],
        None,
    ),
    "table-question-answering": (
        {"text": "How many stars?", "context": '{"Stars": ["36542"]}'},
        {
            "answer": "36542",
            "coordinates": [[0, 0]],
            "cells": ["36542"],
            "aggregator": "NONE",
        },
        "36542",
        None,
    ),
    "text-to-image": ({"text": "grey"}, None, PICTURE, None),
    "chat-completion": (
        {"text": "hi"},
        {"choices": [{"message": {"role": "assistant", "content": "hello"}}]},
        "hello",
        None,
    ),
    "image-classification": (
        {"text": PICTURE},
        [{"label": "tabby cat", "score": 0.8}],
        "tabby cat",
        0.8,
    ),
    "object-detection": (
        {"text": PICTURE},
        [
            {
                "label": "cat",
                "score": 0.97,
                "box": {"xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4},
            }
        ],
        [
            {
                "label": "cat",
                "score": 0.97,
                "box": {"xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4},
            }
        ],
        None,
    ),
    "image-to-text": (
        {"text": PICTURE},
        [{"generated_text": "a grey square"}],
        "a grey square",
        None,
    ),
    "automatic-speech-recognition": ({"text": SOUND}, {"text": "HELLO"}, "HELLO", None),
    "audio-classification": (
        {"text": SOUND},
        [{"label": "neu", "score": 0.7}, {"label": "hap", "score": 0.3}],
        "neu",
        0.7,
    ),
}


def test_every_task_has_a_case() -> None:
    assert set(CASES) == set(TASKS)


@pytest.mark.parametrize("task", sorted(CASES))
def test_task_value_score_and_whole_answer(db: Any, endpoint: Any, task: str) -> None:
    inputs, answer, value, score = CASES[task]
    spec = TASKS[task]
    model = spec.default_model or "acme/some-model"
    db.execute(
        "SELECT hf_fdw.create_engine('local', endpoint => %s)",
        (endpoint.url + "/hf-inference",),
    )

    arguments = {"task": task, "model_name": model, "input_column": "text"}
    if "context" in inputs:
        arguments["context_column"] = "context"
    if "other" in inputs:
        arguments["input_column2"] = "other"
    if task == "zero-shot-classification":
        arguments["candidate_labels"] = ["refund", "faq"]
    names = ", ".join(f"{name} => %({name})s" for name in arguments)
    db.execute(
        f"SELECT hf_fdw.create_model('m', 'prediction', 'local', {names})", arguments
    )
    extra = ["ADD COLUMN answer jsonb OPTIONS (value 'answer')"]
    if spec.read_score:
        extra.append("ADD COLUMN score double precision OPTIONS (value 'score')")
    db.execute("ALTER FOREIGN TABLE m " + ", ".join(extra))

    path = "/hf-inference/models/" + model
    if spec.pipeline:
        path += "/pipeline/" + spec.pipeline
    if spec.chat:
        path = "/v1/chat/completions"
    if answer is None:  # an image, sent as raw bytes
        endpoint.script(path, Reply(body=value, headers={"Content-Type": "image/png"}))
    else:
        endpoint.script(path, Reply(answer))

    where = " AND ".join(f"{column} = %({column})s" for column in inputs)
    selected = "prediction, answer" + (", score" if spec.read_score else "")
    row = db.execute(f"SELECT {selected} FROM m WHERE {where}", inputs).fetchone()
    assert row[0] == value
    if answer is not None:  # the whole answer, as the endpoint sent it
        assert row[1] == answer
    else:
        assert row[1] == {"content_type": "image/png", "bytes": len(PICTURE)}
    if spec.read_score:
        assert row[2] == pytest.approx(score)
    assert len(endpoint.requests_to(path)) == 1
