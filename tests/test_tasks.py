"""Request bodies and answer readers of every task, with no server at all."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from hf_fdw.errors import HfFdwError
from hf_fdw.options import ModelSettings, parse_model
from hf_fdw.tasks import (
    TASKS,
    AnswerError,
    error_in_answer,
    get_task,
    rename_label,
)

SST2 = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"


def model_for(task: str, **fields: Any) -> ModelSettings:
    """Settings for ``task`` as parse_model would give them, fields overridden."""
    values: dict[str, Any] = {
        "task": task,
        "model": TASKS[task].default_model or "acme/model",
        "endpoint": None,
        "input_columns": ("text",),
        "target_column": "prediction",
        "parameters": {},
        "options": {},
        "labels": None,
        "candidate_labels": None,
    }
    values.update(fields)
    return ModelSettings(**values)


def body(task: str, *inputs: Any, **fields: Any) -> dict[str, Any]:
    model = model_for(task, **fields)
    return model.spec.build_body(tuple(inputs), model)


def read(task: str, answer: Any, *inputs: Any, **fields: Any) -> Any:
    model = model_for(task, **fields)
    return model.spec.read_answer(answer, tuple(inputs or ("x",)), model)


def column(type_name: str) -> SimpleNamespace:
    return SimpleNamespace(type_name=type_name)


# --- text-classification -----------------------------------------------------


class TestTextClassification:
    def test_body_is_one_string_with_parameters(self) -> None:
        sent = body("text-classification", "I like you", parameters={"top_k": 2})
        assert sent == {"inputs": "I like you", "parameters": {"top_k": 2}}

    def test_body_without_parameters_has_inputs_only(self) -> None:
        assert body("text-classification", "hi") == {"inputs": "hi"}

    def test_options_are_passed_through(self) -> None:
        sent = body("text-classification", "hi", options={"use_cache": False})
        assert sent == {"inputs": "hi", "options": {"use_cache": False}}

    def test_nested_answer_of_the_hosted_api(self) -> None:
        answer = [[{"label": "POSITIVE", "score": 0.9998}]]
        assert read("text-classification", answer) == "POSITIVE"

    def test_flat_answer_of_endpoints_and_tei(self) -> None:
        answer = [{"label": "NEGATIVE", "score": 0.91}]
        assert read("text-classification", answer) == "NEGATIVE"

    @pytest.mark.parametrize("nested", [False, True])
    def test_top_k_list_gives_the_highest_score_not_the_first(
        self, nested: bool
    ) -> None:
        items = [
            {"label": "joy", "score": 0.2},
            {"label": "anger", "score": 0.7},
            {"label": "fear", "score": 0.1},
        ]
        answer = [items] if nested else items
        assert read("text-classification", answer) == "anger"

    def test_single_object_answer(self) -> None:
        answer = {"label": "LABEL_1", "score": 0.6}
        assert read("text-classification", answer) == "LABEL_1"


class TestLabels:
    def test_array_renames_label_n_by_position(self) -> None:
        answer = [
            [{"label": "LABEL_1", "score": 0.8}, {"label": "LABEL_0", "score": 0.2}]
        ]
        value = read("text-classification", answer, labels=["ham", "spam"])
        assert value == "spam"

    def test_array_renames_label_0(self) -> None:
        answer = [
            {"label": "LABEL_0", "score": 0.55},
            {"label": "LABEL_1", "score": 0.45},
        ]
        value = read("text-classification", answer, labels=["ham", "spam"])
        assert value == "ham"

    def test_object_renames_by_name(self) -> None:
        answer = [{"label": "NEGATIVE", "score": 0.97}]
        labels = {"NEGATIVE": "unhappy", "POSITIVE": "happy"}
        assert read("text-classification", answer, labels=labels) == "unhappy"

    def test_object_that_misses_a_class_is_an_error(self) -> None:
        """A typo in the mapping must not pass the raw class through."""
        answer = [{"label": "neutral", "score": 0.97}]
        labels = {"NEGATIVE": "unhappy"}
        with pytest.raises(HfFdwError) as caught:
            read("text-classification", answer, labels=labels)
        assert caught.value.message == "labels has no name for class 'neutral'"
        assert caught.value.detail == "labels renames: 'NEGATIVE'"

    def test_c1_default_model_positive_renamed_by_array(self) -> None:
        """C1: task only, labels ["neg", "pos"], 'POSITIVE' becomes 'pos'."""
        model = parse_model(
            {"task": "text-classification", "labels": '["neg", "pos"]'},
            {"text": column("text"), "sentiment": column("text")},
        )
        assert model.model == SST2
        answer = [
            [
                {"label": "POSITIVE", "score": 0.9999},
                {"label": "NEGATIVE", "score": 0.0001},
            ]
        ]
        value = model.spec.read_answer(answer, ("I like you. I love you",), model)
        assert value == "pos"

    def test_c1_negative_of_the_default_model(self) -> None:
        answer = [{"label": "NEGATIVE", "score": 0.99}]
        assert read("text-classification", answer, labels=["neg", "pos"]) == "neg"

    def test_c1_default_model_under_its_old_id(self) -> None:
        model = model_for(
            "text-classification",
            model="distilbert-base-uncased-finetuned-sst-2-english",
            labels=["neg", "pos"],
        )
        assert rename_label("POSITIVE", model) == "pos"

    def test_c2_unknown_class_with_array_says_use_an_object(self) -> None:
        model = model_for(
            "text-classification",
            model="acme/emotions",
            labels=["sad", "glad"],
        )
        answer = [{"label": "joy", "score": 0.9}]
        with pytest.raises(HfFdwError) as caught:
            model.spec.read_answer(answer, ("x",), model)
        error = caught.value
        assert "'joy'" in error.message
        assert "by position" in error.message
        assert "object" in error.hint
        assert '{"joy": "..."}' in error.hint
        assert "acme/emotions" in error.detail

    def test_array_too_short_for_the_class(self) -> None:
        model = model_for("text-classification", labels=["ham"])
        with pytest.raises(HfFdwError) as caught:
            rename_label("LABEL_3", model)
        assert caught.value.message == "labels has no name for class 'LABEL_3'"
        assert "number 3" in caught.value.detail

    def test_no_labels_keeps_the_class(self) -> None:
        assert rename_label("LABEL_7", model_for("text-classification")) == "LABEL_7"


# --- zero-shot-classification ------------------------------------------------


class TestZeroShot:
    def test_new_list_shape_top_is_highest_score(self) -> None:
        answer = [
            {"label": "faq", "score": 0.05},
            {"label": "refund", "score": 0.85},
            {"label": "legal", "score": 0.10},
        ]
        assert read("zero-shot-classification", answer) == "refund"

    def test_old_object_shape_top_is_highest_score(self) -> None:
        answer = {
            "sequence": "I want my money back",
            "labels": ["legal", "refund", "faq"],
            "scores": [0.1, 0.85, 0.05],
        }
        assert read("zero-shot-classification", answer) == "refund"

    def test_old_shape_with_unequal_lengths_is_an_answer_error(self) -> None:
        answer = {"sequence": "s", "labels": ["a", "b"], "scores": [0.5]}
        with pytest.raises(AnswerError) as caught:
            read("zero-shot-classification", answer)
        assert caught.value.message == (
            "unexpected answer for task zero-shot-classification"
        )

    def test_c3_candidate_labels_option_only_goes_in_parameters(self) -> None:
        """C3: candidate_labels given as the model option, no parameters."""
        model = parse_model(
            {
                "task": "zero-shot-classification",
                "candidate_labels": '["refund", "legal", "faq"]',
            },
            {"text": column("text"), "topic": column("text")},
        )
        sent = model.spec.build_body(("I want my money back",), model)
        assert sent == {
            "inputs": "I want my money back",
            "parameters": {"candidate_labels": ["refund", "legal", "faq"]},
        }

    def test_candidate_labels_join_other_parameters(self) -> None:
        sent = body(
            "zero-shot-classification",
            "text",
            parameters={"multi_label": True},
            candidate_labels=("a", "b"),
        )
        assert sent["parameters"] == {
            "multi_label": True,
            "candidate_labels": ["a", "b"],
        }

    def test_body_does_not_change_the_model_parameters(self) -> None:
        parameters: dict[str, Any] = {"multi_label": False}
        model = model_for(
            "zero-shot-classification",
            parameters=parameters,
            candidate_labels=("a",),
        )
        model.spec.build_body(("t",), model)
        model.spec.build_body(("t",), model)
        assert parameters == {"multi_label": False}


# --- sentence-similarity -----------------------------------------------------


class TestSentenceSimilarity:
    def test_c6_body_nests_both_sentences_under_inputs(self) -> None:
        sent = body(
            "sentence-similarity",
            "That is a happy person",
            "That is a happy dog",
            input_columns=("a", "b"),
        )
        assert sent == {
            "inputs": {
                "source_sentence": "That is a happy person",
                "sentences": ["That is a happy dog"],
            }
        }

    def test_c6_answer_is_a_float(self) -> None:
        value = read("sentence-similarity", [0.695], "a", "b")
        assert value == pytest.approx(0.695)
        assert type(value) is float

    def test_integer_similarity_becomes_float(self) -> None:
        value = read("sentence-similarity", [1], "a", "a")
        assert value == 1.0 and type(value) is float

    @pytest.mark.parametrize(
        "answer", [0.5, [], ["0.5"], [0.5, 0.6], [True], {"similarity": 0.5}, None]
    )
    def test_other_answers_are_answer_errors(self, answer: Any) -> None:
        with pytest.raises(AnswerError) as caught:
            read("sentence-similarity", answer, "a", "b")
        assert "a list with one float" in caught.value.detail

    def test_request_goes_to_the_pipeline(self) -> None:
        assert get_task("sentence-similarity").pipeline == "sentence-similarity"


# --- question-answering ------------------------------------------------------


class TestQuestionAnswering:
    def test_body_holds_question_and_context(self) -> None:
        sent = body(
            "question-answering",
            "What's my name?",
            "My name is Clara and I live in Berkeley",
            parameters={"top_k": 1},
        )
        assert sent == {
            "inputs": {
                "question": "What's my name?",
                "context": "My name is Clara and I live in Berkeley",
            },
            "parameters": {"top_k": 1},
        }

    def test_object_answer(self) -> None:
        answer = {"answer": "Clara", "score": 0.87, "start": 11, "end": 16}
        assert read("question-answering", answer, "q", "c") == "Clara"

    def test_list_answer_gives_the_best_scored(self) -> None:
        answer = [
            {"answer": "Berkeley", "score": 0.1, "start": 31, "end": 39},
            {"answer": "Clara", "score": 0.8, "start": 11, "end": 16},
        ]
        assert read("question-answering", answer, "q", "c") == "Clara"

    @pytest.mark.parametrize(
        "answer", [[], {"answer": "Clara"}, {"score": 0.5}, [{"answer": 3, "score": 1}]]
    )
    def test_malformed_answers(self, answer: Any) -> None:
        with pytest.raises(AnswerError) as caught:
            read("question-answering", answer, "q", "c")
        assert "{answer, score, start, end}" in caught.value.detail


# --- summarization, translation, text-generation -----------------------------


class TestGeneratedText:
    @pytest.mark.parametrize(
        ("task", "key"),
        [
            ("summarization", "summary_text"),
            ("translation", "translation_text"),
            ("text-generation", "generated_text"),
        ],
    )
    @pytest.mark.parametrize("as_list", [True, False])
    def test_list_or_object_answer(self, task: str, key: str, as_list: bool) -> None:
        item = {key: f"the {key}"}
        answer = [item] if as_list else item
        assert read(task, answer) == f"the {key}"

    def test_generation_object_with_details(self) -> None:
        answer = {"generated_text": "Once upon a time", "details": {"tokens": 4}}
        assert read("text-generation", answer) == "Once upon a time"

    def test_c18_generation_body_is_one_string(self) -> None:
        sent = body(
            "text-generation",
            "Once upon",
            model="acme/tiny-gpt",
            parameters={"max_new_tokens": 5, "return_full_text": False},
        )
        assert sent == {
            "inputs": "Once upon",
            "parameters": {"max_new_tokens": 5, "return_full_text": False},
        }
        assert isinstance(sent["inputs"], str)

    def test_translation_body_keeps_language_parameters(self) -> None:
        sent = body(
            "translation", "Hello", parameters={"src_lang": "en", "tgt_lang": "fr"}
        )
        assert sent == {
            "inputs": "Hello",
            "parameters": {"src_lang": "en", "tgt_lang": "fr"},
        }

    @pytest.mark.parametrize(
        "answer",
        [[], None, "text", [{"summary": "x"}], {"summary_text": None}, [[{"a": 1}]]],
    )
    def test_malformed_summaries(self, answer: Any) -> None:
        with pytest.raises(AnswerError) as caught:
            read("summarization", answer)
        assert caught.value.message == "unexpected answer for task summarization"
        assert "summary_text" in caught.value.detail


# --- fill-mask ---------------------------------------------------------------


class TestFillMask:
    def test_one_mask_gives_the_best_sequence(self) -> None:
        answer = [
            {
                "sequence": "paris is a city.",
                "score": 0.1,
                "token": 1,
                "token_str": "city",
            },
            {
                "sequence": "paris is a capital.",
                "score": 0.6,
                "token": 2,
                "token_str": "capital",
            },
        ]
        assert read("fill-mask", answer, "Paris is a [MASK].") == "paris is a capital."

    def test_one_mask_nested_once(self) -> None:
        answer = [[{"sequence": "the cat sat.", "score": 0.4, "token_str": "cat"}]]
        assert read("fill-mask", answer, "the [MASK] sat.") == "the cat sat."

    def test_several_masks_fill_each_in_order(self) -> None:
        answer = [
            [
                {
                    "sequence": "[CLS] the cat [MASK] [SEP]",
                    "score": 0.2,
                    "token_str": "dog",
                },
                {
                    "sequence": "[CLS] the cat [MASK] [SEP]",
                    "score": 0.7,
                    "token_str": "cat",
                },
            ],
            [
                {
                    "sequence": "[CLS] the [MASK] sat [SEP]",
                    "score": 0.9,
                    "token_str": " sat",
                }
            ],
        ]
        value = read("fill-mask", answer, "The [MASK] [MASK] on the mat.")
        assert value == "The cat sat on the mat."

    def test_roberta_mask_token(self) -> None:
        answer = [
            [{"score": 0.9, "token_str": " hello", "sequence": "s"}],
            [{"score": 0.9, "token_str": " world", "sequence": "s"}],
        ]
        assert read("fill-mask", answer, "<mask>, <mask>!") == "hello, world!"

    def test_several_lists_but_one_mask_is_an_answer_error(self) -> None:
        answer = [
            [{"score": 0.9, "token_str": "a", "sequence": "s"}],
            [{"score": 0.9, "token_str": "b", "sequence": "s"}],
        ]
        with pytest.raises(AnswerError) as caught:
            read("fill-mask", answer, "only one [MASK] here")
        assert "one list per mask token" in caught.value.detail

    @pytest.mark.parametrize(
        "answer",
        [
            [],
            [[]],
            None,
            {"sequence": "s", "score": 1},
            [{"sequence": "s"}],
            [{"score": 0.5}],
            [{"score": True, "sequence": "s"}],
        ],
    )
    def test_malformed_answers(self, answer: Any) -> None:
        with pytest.raises(AnswerError) as caught:
            read("fill-mask", answer, "a [MASK]")
        assert caught.value.message == "unexpected answer for task fill-mask"

    def test_missing_token_str_with_several_masks(self) -> None:
        answer = [[{"score": 0.9, "sequence": "s"}], [{"score": 0.9, "sequence": "s"}]]
        with pytest.raises(AnswerError) as caught:
            read("fill-mask", answer, "[MASK] [MASK]")
        assert "token_str" in caught.value.detail


# --- feature-extraction ------------------------------------------------------


class TestFeatureExtraction:
    def test_body_puts_options_at_top_level(self) -> None:
        sent = body(
            "feature-extraction",
            "hello",
            parameters={"normalize": True, "truncate": True},
        )
        assert sent == {"inputs": "hello", "normalize": True, "truncate": True}

    def test_flat_vector(self) -> None:
        assert read("feature-extraction", [0.5, -1, 2.25]) == [0.5, -1.0, 2.25]

    def test_nested_one_row(self) -> None:
        value = read("feature-extraction", [[0.1, 0.2, 0.3]])
        assert value == [0.1, 0.2, 0.3]
        assert all(type(x) is float for x in value)

    def test_token_embeddings_are_a_clear_error(self) -> None:
        answer = [[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]]
        with pytest.raises(HfFdwError) as caught:
            read("feature-extraction", answer)
        error = caught.value
        assert error.message == (
            "the model returned one vector per token, not one per text"
        )
        assert "pooling" in error.hint

    @pytest.mark.parametrize(
        "answer", [[], [[]], None, {"embeddings": [0.1]}, [0.1, "x"], [True, 0.2]]
    )
    def test_malformed_answers(self, answer: Any) -> None:
        with pytest.raises(AnswerError) as caught:
            read("feature-extraction", answer)
        assert "a list of floats" in caught.value.detail


# --- errors inside answers, malformed answers --------------------------------


class TestErrorInAnswer:
    def test_error_string(self) -> None:
        words = error_in_answer({"error": "Model acme/x is currently loading"})
        assert words == "Model acme/x is currently loading"

    def test_error_list(self) -> None:
        words = error_in_answer({"error": ["input too long", "max 512 tokens"]})
        assert words == "input too long; max 512 tokens"

    @pytest.mark.parametrize(
        "answer", [[{"label": "a", "score": 1}], {"label": "error"}, [0.5], "error"]
    )
    def test_real_answers_are_not_errors(self, answer: Any) -> None:
        assert error_in_answer(answer) is None


MALFORMED = [
    None,
    42,
    "text",
    [],
    [None],
    [[]],
    {},
    [1, 2],
    [{"label": "a"}],
    [{"label": 1, "score": 0.5}],
    [{"label": "a", "score": "high"}],
    [[{"label": "a", "score": 1}], [{"label": "b", "score": 2}]],
    {"labels": "a", "scores": 1},
]


@pytest.mark.parametrize("task", ["text-classification", "zero-shot-classification"])
@pytest.mark.parametrize("answer", MALFORMED, ids=repr)
def test_malformed_classifications_are_answer_errors(task: str, answer: Any) -> None:
    """Never a KeyError, TypeError or IndexError: a message that shows the answer."""
    with pytest.raises(AnswerError) as caught:
        read(task, answer)
    assert caught.value.message == f"unexpected answer for task {task}"
    assert "{label, score}" in caught.value.detail
    assert "got:" in caught.value.detail


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize(
    "answer", [None, 7, "oops", [], {}, [None], [[None]]], ids=repr
)
def test_every_task_reads_junk_as_a_clear_error(task: str, answer: Any) -> None:
    if answer == [] and TASKS[task].value_type == "jsonb":
        # No boxes, no entities: an empty list is a real answer there.
        assert read(task, answer, "a [MASK]", "b") == []
        return
    with pytest.raises(HfFdwError) as caught:
        read(task, answer, "a [MASK]", "b")
    assert caught.value.message.startswith("unexpected answer for task ")


def test_a_long_answer_is_cut_in_the_detail() -> None:
    answer = [{"label": "x" * 5000}]
    with pytest.raises(AnswerError) as caught:
        read("text-classification", answer)
    assert caught.value.detail.endswith("...")
    assert len(caught.value.detail) < 4100


# --- the task table ----------------------------------------------------------


class TestTaskTable:
    def test_unknown_task_lists_the_tasks(self) -> None:
        with pytest.raises(HfFdwError) as caught:
            get_task("image-to-poetry")
        assert caught.value.message == "unknown task 'image-to-poetry'"
        assert "text-classification" in caught.value.hint
        assert "feature-extraction" in caught.value.hint

    def test_text_generation_has_no_default_model(self) -> None:
        assert get_task("text-generation").default_model is None

    @pytest.mark.parametrize(
        ("task", "roles"),
        [
            ("question-answering", ("question", "context")),
            ("sentence-similarity", ("source", "sentence")),
            ("summarization", ("text",)),
        ],
    )
    def test_roles(self, task: str, roles: tuple[str, ...]) -> None:
        assert get_task(task).roles == roles
