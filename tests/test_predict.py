"""From quals to rows: which inputs a query names, and the predictions for them."""

from __future__ import annotations

import time
from types import SimpleNamespace
from dataclasses import replace
from typing import Any

import pytest

from fix_http import Reply, spam_classifier
from hf_fdw.client import InferenceClient
from hf_fdw.errors import HfFdwError
from hf_fdw.options import ROUTER_URL, EngineSettings, ModelSettings, parse_model
from hf_fdw.predict import Predictor, inputs_from_quals
from hf_fdw.tasks import AnswerError

SPAM = "/models/acme/spam"
TOKEN = "hf_PredictTokenNeverShown0123456789"


def qual(field_name: str, operator: Any, value: Any) -> SimpleNamespace:
    """A stand-in for Multicorn's Qual."""
    return SimpleNamespace(field_name=field_name, operator=operator, value=value)


def column(type_name: str) -> SimpleNamespace:
    return SimpleNamespace(type_name=type_name)


def engine_for(url: str, **settings: Any) -> EngineSettings:
    values: dict[str, Any] = {
        "name": "local",
        "endpoint": url,
        "timeout": 5.0,
        "max_retries": 0,
        "concurrency": 4,
        "api_key": None,
    }
    values.update(settings)
    return EngineSettings(**values)


def spam_model() -> ModelSettings:
    return parse_model(
        {
            "task": "text-classification",
            "model": "acme/spam",
            "labels": '["ham", "spam"]',
        },
        {"text": column("text"), "is_spam": column("text")},
    )


def summary_model() -> ModelSettings:
    return parse_model(
        {"task": "summarization", "model": "acme/echo"},
        {"text": column("text"), "summary": column("text")},
    )


def echo_summary(body: Any) -> Reply:
    """Summarize a text as its length and its reversal, so a wrong input shows."""
    text = body["inputs"]
    return Reply([{"summary_text": f"{len(text)}:{text[::-1]}"}])


# --- inputs_from_quals -------------------------------------------------------


class TestInputsFromQuals:
    def test_equals(self) -> None:
        assert inputs_from_quals([qual("text", "=", "hello")], ["text"]) == [("hello",)]

    def test_in_list(self) -> None:
        quals = [qual("text", ("=", True), ["a", "b", "c"])]
        assert inputs_from_quals(quals, ["text"]) == [("a",), ("b",), ("c",)]

    def test_duplicates_removed_in_order(self) -> None:
        quals = [qual("text", ("=", True), ["b", "a", "b", "c", "a"])]
        assert inputs_from_quals(quals, ["text"]) == [("b",), ("a",), ("c",)]

    def test_two_quals_on_one_column_intersect(self) -> None:
        quals = [
            qual("text", ("=", True), ["a", "b", "c"]),
            qual("text", ("=", True), ["c", "x", "a"]),
        ]
        assert inputs_from_quals(quals, ["text"]) == [("a",), ("c",)]

    def test_disjoint_quals_give_no_input(self) -> None:
        quals = [qual("text", "=", "a"), qual("text", "=", "b")]
        assert inputs_from_quals(quals, ["text"]) == []

    def test_is_null_gives_a_none_input(self) -> None:
        assert inputs_from_quals([qual("text", "=", None)], ["text"]) == [(None,)]

    def test_is_not_null_pins_nothing(self) -> None:
        quals = [qual("text", "<>", None), qual("text", "=", "a")]
        assert inputs_from_quals(quals, ["text"]) == [("a",)]

    def test_like_pins_nothing(self) -> None:
        quals = [qual("text", "~~", "a%"), qual("text", "=", "abc")]
        assert inputs_from_quals(quals, ["text"]) == [("abc",)]

    def test_quals_on_other_columns_are_ignored(self) -> None:
        quals = [qual("label", "=", "spam"), qual("text", "=", "hi")]
        assert inputs_from_quals(quals, ["text"]) == [("hi",)]

    def test_c10_no_quals_is_an_error_naming_the_column(self) -> None:
        """C10: OR reaches the FDW as no qual at all."""
        with pytest.raises(HfFdwError) as caught:
            inputs_from_quals([], ["text"])
        error = caught.value
        assert (
            error.message == 'a query on this model must give the input column "text"'
        )
        assert "OR" in error.detail
        assert 'WHERE "text" = ' in error.hint

    @pytest.mark.parametrize(
        "only",
        [
            qual("text", "~~", "a%"),
            qual("text", "<>", None),
            qual("text", ("<>", False), ["a", "b"]),
            qual("text", ">", "m"),
        ],
        ids=["like", "is-not-null", "not-in", "greater"],
    )
    def test_quals_that_pin_nothing_are_an_error(self, only: Any) -> None:
        with pytest.raises(HfFdwError) as caught:
            inputs_from_quals([only], ["text"])
        assert '"text"' in caught.value.message

    def test_multi_input_missing_one_column_names_it(self) -> None:
        with pytest.raises(HfFdwError) as caught:
            inputs_from_quals([qual("question", "=", "q")], ["question", "context"])
        assert caught.value.message.endswith('input column "context"')
        assert '"context" IN (...)' in caught.value.hint

    def test_multi_input_gives_the_product(self) -> None:
        quals = [
            qual("context", ("=", True), ["c1", "c2"]),
            qual("question", ("=", True), ["q1", "q2", "q1"]),
        ]
        assert inputs_from_quals(quals, ["question", "context"]) == [
            ("q1", "c1"),
            ("q1", "c2"),
            ("q2", "c1"),
            ("q2", "c2"),
        ]


# --- Predictor: rows ---------------------------------------------------------


class TestRows:
    def test_one_prediction(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        rows = list(predictor.rows([qual("text", "=", "Subscribe and win free stuff")]))
        assert rows == [{"text": "Subscribe and win free stuff", "is_spam": "spam"}]
        assert endpoint.requests_to(SPAM)[0].json == {
            "inputs": "Subscribe and win free stuff"
        }

    def test_in_list_keeps_the_order(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        quals = [qual("text", ("=", True), ["hello mum", "click to win free"])]
        assert list(predictor.rows(quals)) == [
            {"text": "hello mum", "is_spam": "ham"},
            {"text": "click to win free", "is_spam": "spam"},
        ]

    @pytest.mark.parametrize(
        "text",
        [
            "trailing spaces   ",
            "\ttab\tinside\t",
            "emoji 😀🎉 and 👩‍👩‍👧",
            "cafe\u0301 and caf\u00e9",
            "  \n line breaks \r\n",
            "quote ' and \" and \\ backslash",
        ],
        ids=["spaces", "tabs", "emoji", "combining", "newlines", "quotes"],
    )
    def test_c17_rows_echo_the_input_exactly(self, endpoint: Any, text: str) -> None:
        endpoint.respond("/models/acme/echo", echo_summary)
        predictor = Predictor(engine_for(endpoint.url), summary_model())
        rows = list(predictor.rows([qual("text", "=", text)]))
        assert len(rows) == 1
        assert rows[0]["text"].encode("utf-8") == text.encode("utf-8")
        assert rows[0]["summary"] == f"{len(text)}:{text[::-1]}"
        sent = endpoint.requests[0].json["inputs"]
        assert sent.encode("utf-8") == text.encode("utf-8")

    def test_c9_is_null_gives_null_and_no_request(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        rows = list(predictor.rows([qual("text", "=", None)]))
        assert rows == [{"text": None, "is_spam": None}]
        assert endpoint.requests == []

    def test_c9_null_in_a_list_is_not_sent(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        quals = [qual("text", ("=", True), [None, "free win", None])]
        assert list(predictor.rows(quals)) == [
            {"text": None, "is_spam": None},
            {"text": "free win", "is_spam": "spam"},
        ]
        assert [r.json for r in endpoint.requests] == [{"inputs": "free win"}]

    def test_c9_null_in_one_of_two_inputs(self, endpoint: Any) -> None:
        endpoint.script("/models/acme/qa", Reply({"answer": "Clara", "score": 0.9}))
        model = parse_model(
            {
                "task": "question-answering",
                "model": "acme/qa",
                "input_column": "question",
                "context_column": "context",
            },
            {
                "question": column("text"),
                "context": column("text"),
                "answer": column("text"),
            },
        )
        predictor = Predictor(engine_for(endpoint.url), model)
        quals = [
            qual("question", "=", "What's my name?"),
            qual("context", ("=", True), ["My name is Clara", None]),
        ]
        assert list(predictor.rows(quals)) == [
            {
                "question": "What's my name?",
                "context": "My name is Clara",
                "answer": "Clara",
            },
            {"question": "What's my name?", "context": None, "answer": None},
        ]
        assert len(endpoint.requests) == 1

    def test_similarity_row_holds_a_float(self, endpoint: Any) -> None:
        path = "/models/acme/sim/pipeline/sentence-similarity"
        endpoint.script(path, Reply([0.695]))
        model = parse_model(
            {
                "task": "sentence-similarity",
                "model": "acme/sim",
                "input_column": "a",
                "input_column2": "b",
            },
            {
                "a": column("text"),
                "b": column("text"),
                "similarity": column("double precision"),
            },
        )
        predictor = Predictor(engine_for(endpoint.url), model)
        quals = [
            qual("a", "=", "That is a happy person"),
            qual("b", "=", "That is a happy dog"),
        ]
        rows = list(predictor.rows(quals))
        assert rows == [
            {
                "a": "That is a happy person",
                "b": "That is a happy dog",
                "similarity": 0.695,
            }
        ]
        assert endpoint.requests_to(path)[0].json == {
            "inputs": {
                "source_sentence": "That is a happy person",
                "sentences": ["That is a happy dog"],
            }
        }


# --- Predictor: how many requests --------------------------------------------


class TestRequests:
    def test_c11_repeated_inputs_are_asked_once(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        texts = [
            f"message {i % 10} win" if i % 2 else f"message {i % 10}"
            for i in range(1000)
        ]
        rows = list(predictor.rows([qual("text", ("=", True), texts)]))
        assert len(endpoint.requests) == 10
        assert len(rows) == 10
        assert {r["text"] for r in rows} == set(texts)

    def test_c11_join_batch_of_1000_gives_1000_values(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        batch = [
            ("free win",) if i % 10 == 0 else (f"hi {i % 10}",) for i in range(1000)
        ]
        values = predictor.predict(batch)
        assert len(values) == 1000
        assert values[0] == "spam" and values[1] == "ham"
        assert values.count("spam") == 100
        assert len(endpoint.requests) == 10

    def test_answers_are_remembered_until_forget(self, endpoint: Any) -> None:
        """With no cache (cache_ttl 0) answers last for the transaction."""
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url, cache_ttl=0.0), spam_model())
        assert predictor.predict([("free",)]) == ["ham"]
        assert predictor.predict([("free",)]) == ["ham"]
        assert len(endpoint.requests) == 1
        predictor.forget()
        assert predictor.predict([("free",)]) == ["ham"]
        assert len(endpoint.requests) == 2

    def test_cache_outlives_the_transaction(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        assert predictor.cache_ttl == 600.0
        assert predictor.predict([("win free",)]) == ["spam"]
        predictor.forget()
        assert predictor.predict([("win free",)]) == ["spam"]
        assert len(endpoint.requests) == 1
        assert predictor.usage.cache_hits == 1

    def test_changed_parameters_are_not_served_from_cache(self, endpoint: Any) -> None:
        endpoint.respond(SPAM, spam_classifier)
        plain = Predictor(engine_for(endpoint.url), spam_model())
        tuned = Predictor(
            engine_for(endpoint.url),
            replace(spam_model(), parameters={"top_k": 2}),
        )
        relabelled = Predictor(
            engine_for(endpoint.url), replace(spam_model(), labels=["ok", "junk"])
        )
        assert plain.predict([("win free",)]) == ["spam"]
        assert tuned.predict([("win free",)]) == ["spam"]
        assert relabelled.predict([("win free",)]) == ["junk"]
        assert [r.json for r in endpoint.requests] == [
            {"inputs": "win free"},
            {"inputs": "win free", "parameters": {"top_k": 2}},
            {"inputs": "win free"},
        ]

    def test_concurrent_requests_keep_the_order(self, endpoint: Any) -> None:
        def slow_first(body: Any) -> Reply:
            number = int(body["inputs"])
            return Reply([{"summary_text": f"s{number}"}], delay=0.05 * (8 - number))

        endpoint.respond("/models/acme/echo", slow_first)
        predictor = Predictor(engine_for(endpoint.url, concurrency=4), summary_model())
        started = time.monotonic()
        values = predictor.predict([(str(n),) for n in range(8)])
        elapsed = time.monotonic() - started
        assert values == [f"s{n}" for n in range(8)]
        assert len(endpoint.requests) == 8
        assert elapsed < 1.5  # 1.8 s one after another

    def test_concurrency_one_asks_in_order(self, endpoint: Any) -> None:
        endpoint.respond("/models/acme/echo", echo_summary)
        predictor = Predictor(engine_for(endpoint.url, concurrency=1), summary_model())
        assert predictor.predict([("ab",), ("c",)]) == ["2:ba", "1:c"]
        assert [r.json["inputs"] for r in endpoint.requests] == ["ab", "c"]


# --- Predictor: errors -------------------------------------------------------


class RecordingClient(InferenceClient):
    """A client that records posts and never touches the network."""

    def __init__(self, engine: EngineSettings) -> None:
        super().__init__(engine)
        self.posted: list[tuple[str, Any]] = []

    def post(self, url: str, body: Any, model_id: str | None = None) -> Any:
        self.posted.append((url, body))
        raise AssertionError(f"no request may be sent, but one went to {url}")


class TestErrors:
    def test_c12_error_in_a_200_answer(self, endpoint: Any) -> None:
        endpoint.script(SPAM, Reply({"error": "Input is too long for this model"}))
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        with pytest.raises(AnswerError) as caught:
            list(predictor.rows([qual("text", "=", "x" * 100)]))
        error = caught.value
        assert error.message == "the inference endpoint answered with an error"
        assert error.detail == "Input is too long for this model"

    def test_c12_error_list_in_a_200_answer(self, endpoint: Any) -> None:
        endpoint.script(SPAM, Reply({"error": ["first", "second"]}))
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        with pytest.raises(AnswerError) as caught:
            predictor.predict([("x",)])
        assert caught.value.detail == "first; second"

    def test_c12_error_echoing_the_token_hides_it(self, endpoint: Any) -> None:
        endpoint.script(SPAM, Reply({"error": f"bad header Bearer {TOKEN}"}))
        predictor = Predictor(engine_for(endpoint.url, api_key=TOKEN), spam_model())
        with pytest.raises(AnswerError) as caught:
            predictor.predict([("x",)])
        assert caught.value.detail == "bad header Bearer <api key>"
        assert TOKEN not in str(caught.value)

    def test_unreadable_answer_echoing_the_token_hides_it(self, endpoint: Any) -> None:
        """An echo server answers 200 with the request's headers."""
        endpoint.script(SPAM, Reply({"headers": {"Authorization": f"Bearer {TOKEN}"}}))
        predictor = Predictor(engine_for(endpoint.url, api_key=TOKEN), spam_model())
        with pytest.raises(AnswerError) as caught:
            predictor.predict([("x",)])
        error = caught.value
        assert error.message == "unexpected answer for task text-classification"
        assert "Bearer <api key>" in error.detail
        assert TOKEN not in str(error)

    def test_long_unreadable_answer_is_cut_after_the_token_is_hidden(
        self, endpoint: Any
    ) -> None:
        """A token that straddles the cut leaves no fragment behind."""
        padding = "x" * 280
        endpoint.script(SPAM, Reply({"echo": padding + f"Bearer {TOKEN}" + "y" * 500}))
        predictor = Predictor(engine_for(endpoint.url, api_key=TOKEN), spam_model())
        with pytest.raises(AnswerError) as caught:
            predictor.predict([("x",)])
        detail = caught.value.detail
        assert detail.endswith("...") and len(detail) == 303
        assert TOKEN[:10] not in detail

    def test_endpoint_refusal_reaches_the_rows(self, endpoint: Any) -> None:
        predictor = Predictor(engine_for(endpoint.url), spam_model())
        endpoint.script(
            SPAM, Reply({"error": "Model acme/spam does not exist"}, status=404)
        )
        with pytest.raises(HfFdwError) as caught:
            list(predictor.rows([qual("text", "=", "hi")]))
        assert caught.value.detail == "Model acme/spam does not exist"
        assert "'acme/spam'" in caught.value.hint

    def test_hosted_router_without_key_fails_before_any_request(self) -> None:
        engine = engine_for(ROUTER_URL)
        client = RecordingClient(engine)
        predictor = Predictor(engine, spam_model(), client=client)
        with pytest.raises(HfFdwError) as caught:
            list(predictor.rows([qual("text", "=", "hello")]))
        error = caught.value
        assert error.message == (
            "engine 'local' has no API key for the hosted Inference API"
        )
        assert "hf_fdw.set_api_key('local'" in error.hint
        assert client.posted == []

    def test_hosted_router_without_key_and_only_nulls_is_fine(self) -> None:
        engine = engine_for(ROUTER_URL)
        client = RecordingClient(engine)
        predictor = Predictor(engine, spam_model(), client=client)
        assert predictor.predict([(None,)]) == [None]
        assert client.posted == []

    def test_model_with_its_own_endpoint_needs_no_router_key(
        self, endpoint: Any
    ) -> None:
        endpoint.script("/classify", Reply([{"label": "LABEL_1", "score": 0.7}]))
        model = parse_model(
            {
                "task": "text-classification",
                "endpoint": endpoint.url + "/classify",
                "labels": '["ham", "spam"]',
            },
            {"text": column("text"), "is_spam": column("text")},
        )
        predictor = Predictor(engine_for(ROUTER_URL), model)
        assert predictor.predict([("hello",)]) == ["spam"]
        assert [r.path for r in endpoint.requests] == ["/classify"]


class TestOddAnswersAndQuals:
    def test_any_of_null_array_asks_for_nothing(self) -> None:
        assert inputs_from_quals([qual("text", ("=", True), None)], ("text",)) == []

    @pytest.mark.parametrize(
        ("label", "problem"),
        [("a\u0000b", "a NUL character"), ("a\ud800b", "a lone UTF-16 surrogate")],
    )
    def test_text_postgres_cannot_hold_is_an_error(
        self, endpoint: Any, label: str, problem: str
    ) -> None:
        endpoint.script(SPAM, Reply([[{"label": label, "score": 0.9}]]))
        model = parse_model(
            {"task": "text-classification", "model": "acme/spam"},
            {"text": column("text"), "is_spam": column("text")},
        )
        predictor = Predictor(engine_for(endpoint.url), model)
        with pytest.raises(AnswerError) as caught:
            predictor.predict([("x",)])
        assert problem in caught.value.message

    def test_answers_bought_with_a_key_are_not_served_without_it(
        self, endpoint: Any
    ) -> None:
        endpoint.respond(SPAM, spam_classifier)
        with_key = Predictor(engine_for(endpoint.url, api_key="hf_alice"), spam_model())
        without = Predictor(engine_for(endpoint.url), spam_model())
        assert with_key.predict([("win free",)]) == ["spam"]
        assert without.predict([("win free",)]) == ["spam"]
        assert len(endpoint.requests) == 2


class TestBatching:
    """batch_size > 1: feature-extraction sends lists, row-aligned."""

    @staticmethod
    def embed_model() -> ModelSettings:
        return parse_model(
            {"task": "feature-extraction", "model": "acme/embed"},
            {"text": column("text"), "vector": column("double precision[]")},
        )

    def test_inputs_go_in_lists_and_come_back_in_order(self, endpoint: Any) -> None:
        path = "/models/acme/embed/pipeline/feature-extraction"

        def embed(body: Any) -> Reply:
            return Reply([[float(len(text)), 1.0] for text in body["inputs"]])

        endpoint.respond(path, embed)
        predictor = Predictor(
            engine_for(endpoint.url, batch_size=3, concurrency=2), self.embed_model()
        )
        texts = ["a", "bb", "ccc", "dddd", "eeeee", "a"]
        values = predictor.predict([(t,) for t in texts])
        assert values == [
            [1.0, 1.0],
            [2.0, 1.0],
            [3.0, 1.0],
            [4.0, 1.0],
            [5.0, 1.0],
            [1.0, 1.0],
        ]
        assert sorted(len(r.json["inputs"]) for r in endpoint.requests) == [2, 3]

    def test_a_misaligned_answer_fails_the_group(self, endpoint: Any) -> None:
        path = "/models/acme/embed/pipeline/feature-extraction"
        endpoint.script(path, Reply([[0.5, 0.5]]))
        predictor = Predictor(
            engine_for(endpoint.url, batch_size=4), self.embed_model()
        )
        with pytest.raises(HfFdwError) as caught:
            predictor.predict([("a",), ("b",)])
        assert caught.value.message == (
            "a batched answer does not line up with its inputs"
        )
        assert caught.value.detail == "sent 2 inputs, got 1 results"
