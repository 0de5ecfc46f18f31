"""Option parsing: engines, models, endpoints and the URL each request goes to."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from hf_fdw.errors import HfFdwError
from hf_fdw.options import (
    ROUTER_URL,
    EngineSettings,
    check_endpoint,
    parse_engine,
    parse_engine_options,
    parse_model,
    request_url,
)


def column(type_name: str) -> SimpleNamespace:
    """A stand-in for Multicorn's ColumnDefinition."""
    return SimpleNamespace(type_name=type_name)


def columns(**types: str) -> dict[str, SimpleNamespace]:
    return {name: column(type_name) for name, type_name in types.items()}


TEXT_TABLE = columns(text="text", label="text")


def error_of(call: Any, *args: Any, **kwargs: Any) -> HfFdwError:
    with pytest.raises(HfFdwError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- parse_model: task and model ---------------------------------------------


class TestTask:
    def test_task_is_required(self) -> None:
        error = error_of(parse_model, {"model": "acme/x"}, TEXT_TABLE)
        assert error.message == "option task is required"
        assert "text-classification" in error.hint

    def test_unknown_task_lists_the_tasks(self) -> None:
        error = error_of(parse_model, {"task": "text-to-sql"}, TEXT_TABLE)
        assert error.message == "unknown task 'text-to-sql'"
        assert "zero-shot-classification" in error.hint
        assert "summarization" in error.hint

    def test_unknown_option_names_it(self) -> None:
        error = error_of(
            parse_model,
            {"task": "summarization", "input_colum": "text", "speed": "max"},
            TEXT_TABLE,
        )
        assert error.message == "unknown option 'input_colum', 'speed'"
        assert "input_column" in error.hint

    def test_server_and_mapping_options_are_accepted(self) -> None:
        model = parse_model(
            {
                "task": "summarization",
                "engine_name": "local",
                "engine_endpoint": "http://127.0.0.1:9",
                "engine_options": "{}",
                "api_key": "hf_x",
            },
            TEXT_TABLE,
        )
        assert model.task == "summarization"

    def test_task_only_uses_the_default_model(self) -> None:
        model = parse_model(
            {"task": "question-answering", "context_column": "c"},
            columns(text="text", c="text", answer="text"),
        )
        assert model.model == "deepset/roberta-base-squad2"

    def test_named_model_wins(self) -> None:
        model = parse_model(
            {"task": "summarization", "model": "acme/short"}, TEXT_TABLE
        )
        assert model.model == "acme/short"

    def test_text_generation_needs_a_model_or_endpoint(self) -> None:
        error = error_of(parse_model, {"task": "text-generation"}, TEXT_TABLE)
        assert error.message == "task text-generation has no default model"
        assert "model_name" in error.hint

    def test_text_generation_with_an_endpoint_only(self) -> None:
        model = parse_model(
            {"task": "text-generation", "endpoint": "http://127.0.0.1:8080/"},
            TEXT_TABLE,
        )
        assert model.model is None
        assert model.endpoint == "http://127.0.0.1:8080/"


# --- parse_model: columns ----------------------------------------------------


class TestColumns:
    def test_input_column_defaults_to_text(self) -> None:
        model = parse_model({"task": "text-classification"}, TEXT_TABLE)
        assert model.input_columns == ("text",)
        assert model.target_column == "label"

    def test_missing_input_column_is_named(self) -> None:
        error = error_of(
            parse_model,
            {"task": "summarization", "input_column": "body"},
            columns(article="text", summary="text"),
        )
        assert error.message == "input_column 'body' is not a column of the table"
        assert error.detail == "columns: article, summary"

    def test_question_answering_needs_context_column(self) -> None:
        error = error_of(
            parse_model,
            {"task": "question-answering"},
            columns(text="text", answer="text"),
        )
        assert error.message == "task question-answering needs option context_column"
        assert "context_column =>" in error.hint

    def test_similarity_needs_input_column2(self) -> None:
        error = error_of(
            parse_model,
            {"task": "sentence-similarity", "input_column": "a"},
            columns(a="text", b="text", score="double precision"),
        )
        assert error.message == "task sentence-similarity needs option input_column2"

    def test_similarity_columns_in_role_order(self) -> None:
        model = parse_model(
            {"task": "sentence-similarity", "input_column": "a", "input_column2": "b"},
            columns(a="text", b="text", score="double precision"),
        )
        assert model.input_columns == ("a", "b")
        assert model.target_column == "score"

    def test_one_column_for_two_inputs_is_refused(self) -> None:
        error = error_of(
            parse_model,
            {"task": "question-answering", "input_column": "q", "context_column": "q"},
            columns(q="text", answer="text"),
        )
        assert error.message == "column 'q' is used for two inputs"

    def test_target_cannot_be_inferred_from_two_columns(self) -> None:
        error = error_of(
            parse_model,
            {"task": "summarization"},
            columns(text="text", summary="text", note="text"),
        )
        assert error.message == "cannot tell which column receives the prediction"
        assert error.detail == "columns other than the inputs: summary, note"
        assert "target_column" in error.hint

    def test_target_cannot_be_inferred_from_no_column(self) -> None:
        error = error_of(parse_model, {"task": "summarization"}, columns(text="text"))
        assert error.detail == "columns other than the inputs: none"

    def test_target_column_chosen_among_several(self) -> None:
        model = parse_model(
            {"task": "summarization", "target_column": "summary"},
            columns(text="text", summary="text", note="text"),
        )
        assert model.target_column == "summary"

    def test_target_column_must_exist(self) -> None:
        error = error_of(
            parse_model,
            {"task": "summarization", "target_column": "nope"},
            TEXT_TABLE,
        )
        assert error.message == "target_column 'nope' is not a column of the table"

    def test_target_cannot_be_an_input(self) -> None:
        error = error_of(
            parse_model,
            {"task": "summarization", "target_column": "text"},
            TEXT_TABLE,
        )
        assert error.message == (
            "column 'text' cannot be both an input and the prediction"
        )

    def test_column_without_type_name_counts_as_text(self) -> None:
        model = parse_model({"task": "summarization"}, {"text": None, "out": None})
        assert model.target_column == "out"


class TestTargetType:
    @pytest.mark.parametrize(
        ("task", "type_name"),
        [
            ("summarization", "text"),
            ("summarization", "character varying"),
            ("sentence-similarity", "double precision"),
            ("sentence-similarity", "real"),
            ("sentence-similarity", "numeric(5,4)"),
            ("feature-extraction", "double precision[]"),
            ("feature-extraction", "real[]"),
        ],
    )
    def test_accepted(self, task: str, type_name: str) -> None:
        options = {"task": task, "input_column": "a", "input_column2": "b"}
        if task != "sentence-similarity":
            del options["input_column2"]
        table = columns(a="text", b="text", out=type_name)
        if task != "sentence-similarity":
            del table["b"]
        assert parse_model(options, table).target_column == "out"

    @pytest.mark.parametrize(
        ("task", "type_name", "expected"),
        [
            ("summarization", "integer", "text"),
            ("summarization", "text[]", "text"),
            ("summarization", "character varying(2)", "text"),
            ("summarization", "name", "text"),
            ("sentence-similarity", "text", "double precision"),
            ("sentence-similarity", "double precision[]", "double precision"),
            ("feature-extraction", "double precision", "double precision[]"),
            ("feature-extraction", "text", "double precision[]"),
        ],
    )
    def test_mismatch(self, task: str, type_name: str, expected: str) -> None:
        options = {"task": task, "input_column": "a", "input_column2": "b"}
        table = columns(a="text", b="text", out=type_name)
        if task != "sentence-similarity":
            del options["input_column2"]
            del table["b"]
        error = error_of(parse_model, options, table)
        assert error.message == (
            f"column 'out' has type {type_name}, but task {task} gives {expected}"
        )
        assert error.hint == f"declare the column as {expected}"


# --- parse_model: JSON options -----------------------------------------------


class TestJsonOptions:
    def test_parameters_and_options_are_read(self) -> None:
        model = parse_model(
            {
                "task": "summarization",
                "parameters": '{"max_length": 60}',
                "options": '{"use_cache": false}',
            },
            TEXT_TABLE,
        )
        assert model.parameters == {"max_length": 60}
        assert model.options == {"use_cache": False}

    def test_bad_json_in_parameters(self) -> None:
        error = error_of(
            parse_model,
            {"task": "summarization", "parameters": "{max_length: 60}"},
            TEXT_TABLE,
        )
        assert error.message == "option parameters is not valid JSON"
        assert "property name" in error.detail

    def test_parameters_must_be_an_object(self) -> None:
        error = error_of(
            parse_model, {"task": "summarization", "parameters": "[1]"}, TEXT_TABLE
        )
        assert error.message == "option parameters must be a JSON object"
        assert error.detail == "got list: [1]"

    def test_bad_json_in_labels(self) -> None:
        error = error_of(
            parse_model,
            {"task": "text-classification", "labels": "['ham', 'spam']"},
            TEXT_TABLE,
        )
        assert error.message == "option labels is not valid JSON"

    @pytest.mark.parametrize("labels", ["[]", "{}", "[1, 2]", '"ham"', '{"a": 1}'])
    def test_labels_must_be_strings(self, labels: str) -> None:
        error = error_of(
            parse_model, {"task": "text-classification", "labels": labels}, TEXT_TABLE
        )
        assert error.message == (
            "labels must be a non-empty JSON array or object of strings"
        )
        assert error.detail == f"got: {labels}"

    def test_labels_array_and_object(self) -> None:
        table = TEXT_TABLE
        array = parse_model(
            {"task": "text-classification", "labels": '["ham", "spam"]'}, table
        )
        mapping = parse_model(
            {"task": "text-classification", "labels": '{"LABEL_1": "spam"}'}, table
        )
        assert array.labels == ["ham", "spam"]
        assert mapping.labels == {"LABEL_1": "spam"}

    def test_labels_only_for_classifiers(self) -> None:
        error = error_of(
            parse_model,
            {"task": "summarization", "labels": '["a"]'},
            TEXT_TABLE,
        )
        assert error.message == (
            "labels applies to text-classification, image-classification, "
            "audio-classification only"
        )


class TestCandidateLabels:
    def test_zero_shot_requires_candidate_labels(self) -> None:
        error = error_of(parse_model, {"task": "zero-shot-classification"}, TEXT_TABLE)
        assert error.message == "zero-shot-classification needs candidate_labels"
        assert "candidate_labels =>" in error.hint

    def test_from_the_option(self) -> None:
        model = parse_model(
            {
                "task": "zero-shot-classification",
                "candidate_labels": '["refund", "legal"]',
            },
            TEXT_TABLE,
        )
        assert model.candidate_labels == ("refund", "legal")
        assert model.parameters == {}

    def test_from_parameters(self) -> None:
        model = parse_model(
            {
                "task": "zero-shot-classification",
                "parameters": '{"candidate_labels": ["a", "b"]}',
            },
            TEXT_TABLE,
        )
        assert model.candidate_labels == ("a", "b")

    @pytest.mark.parametrize("value", ["[]", '["a", ""]', '"a,b"', "[1]"])
    def test_bad_candidate_labels(self, value: str) -> None:
        error = error_of(
            parse_model,
            {"task": "zero-shot-classification", "candidate_labels": value},
            TEXT_TABLE,
        )
        assert error.message == "candidate_labels must be a non-empty list of strings"

    def test_only_for_zero_shot(self) -> None:
        error = error_of(
            parse_model,
            {"task": "text-classification", "candidate_labels": '["a"]'},
            TEXT_TABLE,
        )
        assert error.message == (
            "candidate_labels applies to zero-shot-classification only"
        )


# --- endpoints ---------------------------------------------------------------


class TestCheckEndpoint:
    def test_spaces_are_dropped_and_the_path_kept_as_given(self) -> None:
        """Case C7: a model's endpoint is called exactly, trailing slash too."""
        url = check_endpoint(" http://127.0.0.1:8080/predict/ ", "endpoint")
        assert url == "http://127.0.0.1:8080/predict/"

    def test_engine_endpoint_loses_its_trailing_slash(self) -> None:
        engine = parse_engine({"engine_endpoint": "http://127.0.0.1:8080/"})
        assert engine.endpoint == "http://127.0.0.1:8080"

    @pytest.mark.parametrize(
        "url",
        [
            "127.0.0.1:8080",
            "ftp://127.0.0.1/x",
            "http://",
            "",
            "http://[::1",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:port",
        ],
    )
    def test_not_an_http_url(self, url: str) -> None:
        error = error_of(check_endpoint, url, "endpoint")
        assert error.message == f"endpoint is not an http(s) URL: {url!r}"

    @pytest.mark.parametrize(
        "url",
        [
            "https://api-inference.huggingface.co/models/acme/x",
            "https://API-Inference.HuggingFace.co",
            "http://api-inference.huggingface.co:443/",
        ],
    )
    def test_c8_retired_host_names_the_router(self, url: str) -> None:
        error = error_of(check_endpoint, url, "engine endpoint")
        assert error.message == (
            "engine endpoint names the retired host api-inference.huggingface.co"
        )
        assert "410" in error.detail
        assert "https://router.huggingface.co/hf-inference" in error.hint

    def test_c8_retired_host_as_model_endpoint(self) -> None:
        error = error_of(
            parse_model,
            {
                "task": "summarization",
                "endpoint": "https://api-inference.huggingface.co/models/x",
            },
            TEXT_TABLE,
        )
        assert error.message.startswith("endpoint names the retired host")
        assert ROUTER_URL in error.hint

    def test_c8_retired_host_as_engine_endpoint(self) -> None:
        error = error_of(
            parse_engine,
            {"engine_endpoint": "https://api-inference.huggingface.co"},
            environ={},
        )
        assert ROUTER_URL in error.hint

    def test_credentials_in_the_url_are_refused(self) -> None:
        error = error_of(check_endpoint, "http://user:hf_secret@127.0.0.1/", "endpoint")
        assert error.message == "endpoint must not carry credentials in the URL"
        assert "hf_secret" not in str(error)


# --- engines -----------------------------------------------------------------


class TestParseEngine:
    def test_defaults(self) -> None:
        engine = parse_engine({"engine_name": "hf"}, environ={})
        assert engine.endpoint == ROUTER_URL
        assert (engine.timeout, engine.max_retries, engine.concurrency) == (30.0, 3, 8)
        assert engine.api_key is None
        assert engine.is_hosted

    def test_local_endpoint_is_not_hosted(self) -> None:
        engine = parse_engine({"engine_endpoint": "http://127.0.0.1:8080/"}, environ={})
        assert engine.endpoint == "http://127.0.0.1:8080"
        assert not engine.is_hosted
        assert engine.name == "(unnamed)"

    def test_inference_endpoints_are_not_the_hosted_router(self) -> None:
        engine = EngineSettings(
            "e", "https://abc.endpoints.huggingface.cloud", 1.0, 0, 1
        )
        assert not engine.is_hosted

    def test_engine_options_are_read(self) -> None:
        engine = parse_engine(
            {"engine_options": '{"timeout": 2.5, "max_retries": 0, "concurrency": 8}'},
            environ={},
        )
        assert (engine.timeout, engine.max_retries, engine.concurrency) == (2.5, 0, 8)

    def test_api_key_from_the_mapping(self) -> None:
        engine = parse_engine({"api_key": "hf_mapping"}, environ={})
        assert engine.api_key == "hf_mapping"

    def test_api_key_from_the_environment(self) -> None:
        engine = parse_engine(
            {"engine_options": '{"api_key_env": "HF_TOKEN"}'},
            environ={"HF_TOKEN": "hf_from_env"},
        )
        assert engine.api_key == "hf_from_env"

    def test_mapping_key_wins_over_environment(self) -> None:
        engine = parse_engine(
            {"api_key": "hf_mapping", "engine_options": '{"api_key_env": "HF_TOKEN"}'},
            environ={"HF_TOKEN": "hf_from_env"},
        )
        assert engine.api_key == "hf_mapping"

    def test_empty_key_and_unset_variable_give_no_key(self) -> None:
        engine = parse_engine(
            {"api_key": "", "engine_options": '{"api_key_env": "HF_TOKEN"}'},
            environ={},
        )
        assert engine.api_key is None

    def test_key_is_not_in_the_repr(self) -> None:
        engine = parse_engine({"api_key": "hf_secret_123"}, environ={})
        assert "hf_secret_123" not in repr(engine)

    def test_bad_json_in_engine_options(self) -> None:
        error = error_of(parse_engine, {"engine_options": "{timeout: 1}"}, environ={})
        assert error.message == "option engine_options is not valid JSON"


class TestEngineOptions:
    def test_defaults(self) -> None:
        assert parse_engine_options(None) == {
            "timeout": 30.0,
            "max_retries": 3,
            "concurrency": 8,
            "max_requests": 10_000,
            "on_error": "raise",
            "cache_ttl": None,
            "verbose": False,
            "max_media_bytes": 20 * 1024 * 1024,
            "batch_size": 1,
            "allow_private_urls": False,
            "api_key_env": None,
        }

    def test_on_error_words(self) -> None:
        assert parse_engine_options({"on_error": "null"})["on_error"] == "null"
        error = error_of(parse_engine_options, {"on_error": "ignore"})
        assert error.message == "engine option on_error must be one of: raise, null"


class TestBodyOptionsAreNotSettings:
    def test_a_setting_in_options_is_refused(self) -> None:
        error = error_of(
            parse_model, {"task": "fill-mask", "options": '{"timeout": 5}'}, TEXT_TABLE
        )
        assert error.message == "options holds hf_fdw settings: timeout"
        assert "ALTER FOREIGN TABLE ... OPTIONS (ADD timeout" in error.hint


class TestExtraColumns:
    def test_score_and_answer_columns_are_not_the_target(self) -> None:
        columns = {
            "text": column("text"),
            "label": column("text"),
            "confidence": SimpleNamespace(
                type_name="double precision", options={"value": "score"}
            ),
            "raw": SimpleNamespace(type_name="jsonb", options={"value": "answer"}),
        }
        model = parse_model({"task": "text-classification"}, columns)
        assert (model.target_column, model.score_column, model.answer_column) == (
            "label",
            "confidence",
            "raw",
        )

    def test_an_extra_column_cannot_be_the_target(self) -> None:
        columns = {
            "text": column("text"),
            "confidence": SimpleNamespace(
                type_name="double precision", options={"value": "score"}
            ),
        }
        error = error_of(
            parse_model,
            {"task": "text-classification", "target_column": "confidence"},
            columns,
        )
        assert error.message == (
            "column 'confidence' cannot be both an input and the prediction"
        )


class TestModelOverrides:
    """A foreign table's own settings win over its engine's."""

    def test_table_options_override_the_engine(self) -> None:
        engine = parse_engine(
            {
                "engine_options": '{"timeout": 5, "max_requests": 50}',
                "timeout": "2.5",
                "on_error": "null",
            },
            environ={},
        )
        assert (engine.timeout, engine.max_requests, engine.on_error) == (
            2.5,
            50,
            "null",
        )

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"max_retries": "lots"}, "option max_retries must be a number"),
            ({"concurrency": "0"}, "option concurrency must be a number from 1 to 64"),
            ({"on_error": "skip"}, "option on_error must be one of: raise, null"),
        ],
    )
    def test_bad_overrides(self, options: dict[str, str], message: str) -> None:
        error = error_of(parse_engine, options, environ={})
        assert error.message == message

    def test_overrides_are_table_options(self) -> None:
        model = parse_model(
            {"task": "fill-mask", "max_requests": "3", "on_error": "null"}, TEXT_TABLE
        )
        assert model.task == "fill-mask"

    def test_unknown_option(self) -> None:
        error = error_of(parse_engine_options, {"retries": 2})
        assert error.message == "unknown engine option 'retries'"
        assert "max_retries" in error.hint

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("timeout", 0.05),
            ("timeout", 601),
            ("timeout", "30"),
            ("timeout", float("nan")),
            ("timeout", float("inf")),
            ("max_retries", -1),
            ("max_retries", 11),
            ("max_retries", 2.5),
            ("max_retries", True),
            ("max_retries", float("inf")),
            pytest.param("max_retries", 10**400, id="max_retries-huge"),
            ("concurrency", 0),
            ("concurrency", 65),
        ],
    )
    def test_out_of_bounds(self, name: str, value: Any) -> None:
        error = error_of(parse_engine_options, {name: value})
        assert error.message.startswith(f"engine option {name} must be a number from")
        assert error.detail == f"got {value!r}"

    @pytest.mark.parametrize(
        ("name", "value", "expected"),
        [
            ("timeout", 0.1, 0.1),
            ("timeout", 600, 600.0),
            ("max_retries", 0, 0),
            ("max_retries", 10.0, 10),
            ("concurrency", 64, 64),
        ],
    )
    def test_bounds_are_inclusive(self, name: str, value: Any, expected: Any) -> None:
        settings = parse_engine_options({name: value})
        assert settings[name] == expected
        assert type(settings[name]) is type(expected)

    def test_null_means_the_default(self) -> None:
        assert parse_engine_options({"timeout": None})["timeout"] == 30.0

    @pytest.mark.parametrize("value", ["HF TOKEN", "1ABC", 5, ""])
    def test_api_key_env_must_be_a_variable_name(self, value: Any) -> None:
        error = error_of(parse_engine_options, {"api_key_env": value})
        assert error.message == (
            "engine option api_key_env must name an environment variable"
        )


# --- request_url -------------------------------------------------------------


def engine_at(url: str) -> EngineSettings:
    return EngineSettings("e", url, 5.0, 0, 1)


class TestRequestUrl:
    def test_c7_model_endpoint_is_called_as_given(self) -> None:
        model = parse_model(
            {
                "task": "text-classification",
                "endpoint": "http://127.0.0.1:8080/some/path",
            },
            TEXT_TABLE,
        )
        url = request_url(engine_at("http://127.0.0.1:9000"), model)
        assert url == "http://127.0.0.1:8080/some/path"

    def test_c7_model_endpoint_gets_no_pipeline(self) -> None:
        model = parse_model(
            {"task": "feature-extraction", "endpoint": "http://127.0.0.1:8080/embed"},
            columns(text="text", vector="double precision[]"),
        )
        assert (
            request_url(engine_at(ROUTER_URL), model) == "http://127.0.0.1:8080/embed"
        )

    def test_engine_endpoint_gets_the_model(self) -> None:
        model = parse_model(
            {"task": "text-classification", "model": "acme/spam"}, TEXT_TABLE
        )
        url = request_url(engine_at("http://127.0.0.1:9000"), model)
        assert url == "http://127.0.0.1:9000/models/acme/spam"

    def test_router_with_the_default_model(self) -> None:
        model = parse_model({"task": "summarization"}, TEXT_TABLE)
        assert request_url(engine_at(ROUTER_URL), model) == (
            "https://router.huggingface.co/hf-inference/models/facebook/bart-large-cnn"
        )

    def test_similarity_uses_its_pipeline(self) -> None:
        model = parse_model(
            {"task": "sentence-similarity", "input_column": "a", "input_column2": "b"},
            columns(a="text", b="text", score="double precision"),
        )
        assert request_url(engine_at(ROUTER_URL), model) == (
            f"{ROUTER_URL}/models/sentence-transformers/all-MiniLM-L6-v2"
            "/pipeline/sentence-similarity"
        )

    def test_embeddings_use_their_pipeline(self) -> None:
        model = parse_model(
            {"task": "feature-extraction", "model": "BAAI/bge-small-en-v1.5"},
            columns(text="text", vector="double precision[]"),
        )
        assert request_url(engine_at("http://127.0.0.1:9000"), model) == (
            "http://127.0.0.1:9000/models/BAAI/bge-small-en-v1.5"
            "/pipeline/feature-extraction"
        )
