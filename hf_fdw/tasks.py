"""Every supported task in one place: its inputs, body, answer and target value.

A task entry says which input roles it takes (``text``; ``question`` and
``context``; ``source`` and ``sentence``), how to build the request body from
one tuple of inputs, and how to read the endpoint's answer into the value that
lands in the model's target column. Answers are read tolerantly: every variant
listed in the protocol notes (nested or flat lists, old and new zero-shot
shapes, a list where the spec says object) gives the same value.

Adding a task means adding one ``Task`` to ``TASKS`` (and one row to the
``hf_fdw.tasks`` table of the extension script; a test keeps both in step).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
import base64
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hf_fdw.errors import HfFdwError
from hf_fdw.media import sniff_mime

if TYPE_CHECKING:
    from hf_fdw.options import ModelSettings

Inputs = tuple[Any, ...]


@dataclass(frozen=True)
class Task:
    """How one inference task is asked and answered."""

    name: str
    roles: tuple[str, ...]
    value_type: str
    default_model: str | None
    build_body: Callable[[Inputs, ModelSettings], dict[str, Any]]
    read_answer: Callable[[Any, Inputs, ModelSettings], Any]
    pipeline: str | None = None
    # How long answers are cached when the model says nothing (cache_ttl):
    # 0 keeps them for the transaction only.
    default_cache_ttl: float = 600.0
    # The input is an image or a sound (bytea bytes, or an http(s) URL).
    media: bool = False
    # The score of the value chosen, for a column with OPTIONS (value 'score').
    read_score: Callable[[Any], float | None] | None = None
    # One row per item of the answer (OPTIONS (row_per_item 'true')): the
    # fields an item has, each "text" or "number", and how to list them.
    item_fields: Mapping[str, str] | None = None
    read_items: Callable[[Any, ModelSettings], list[dict[str, Any]]] | None = None
    # Sent to the OpenAI-style chat route, the model named in the body.
    chat: bool = False
    # Several inputs in one request (batch_size > 1), where the protocol has
    # a row-aligned list form.
    build_batch: Callable[[Sequence[Inputs], ModelSettings], dict[str, Any]] | None = (
        None
    )
    read_batch: Callable[[Any, Sequence[Inputs], ModelSettings], list[Any]] | None = (
        None
    )


@dataclass(frozen=True)
class RawBody:
    """A request body sent as raw bytes with their MIME type, not as JSON."""

    data: bytes = field(repr=False)
    mime: str


class AnswerError(HfFdwError):
    """The endpoint answered 200 with something this task cannot read."""


def _unexpected(task: str, answer: Any, expected: str) -> AnswerError:
    shown = repr(answer)
    if len(shown) > 4000:  # cut again, once scrubbed of the key (predict.py)
        shown = shown[:4000] + "..."
    return AnswerError(
        f"unexpected answer for task {task}",
        detail=f"expected {expected}, got: {shown}",
        hint="check that the model really serves this task, "
        "or that the endpoint speaks the Hugging Face inference protocol",
    )


def _text_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any]:
    return _with_extras({"inputs": inputs[0]}, model, dict(model.parameters))


def _with_extras(
    body: dict[str, Any], model: ModelSettings, parameters: dict[str, Any]
) -> dict[str, Any]:
    if parameters:
        body["parameters"] = parameters
    if model.options:
        body["options"] = dict(model.options)
    return body


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scored_items(task: str, answer: Any) -> list[dict[str, Any]]:
    """Read ``[{label, score}]`` in any nesting the providers use."""
    if isinstance(answer, Mapping):
        if "labels" in answer and "scores" in answer:
            labels, scores = answer["labels"], answer["scores"]
            if (
                isinstance(labels, list)
                and isinstance(scores, list)
                and len(labels) == len(scores)
            ):
                answer = [
                    {"label": label, "score": score}
                    for label, score in zip(labels, scores)
                ]
        else:
            answer = [answer]
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list):
        answer = answer[0]
    if not isinstance(answer, list) or not answer:
        raise _unexpected(task, answer, "a non-empty list of {label, score}")
    for item in answer:
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("label"), str)
            or not _is_number(item.get("score"))
        ):
            raise _unexpected(task, answer, "a list of {label, score}")
    return list(answer)


def _top(items: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return max(items, key=lambda item: item["score"])


_POSITIONAL_LABEL = re.compile(r"LABEL_(\d+)")

# Class names, in index order, of default models that do not answer LABEL_<n>.
# A positional ``labels`` array can rename these too (case C1).
KNOWN_CLASSES: dict[str, tuple[str, ...]] = {
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english": (
        "NEGATIVE",
        "POSITIVE",
    ),
}
# The same model under its pre-namespace id, as MindsDB's settings name it.
KNOWN_CLASSES["distilbert-base-uncased-finetuned-sst-2-english"] = KNOWN_CLASSES[
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
]


def rename_label(label: str, model: ModelSettings) -> str:
    """Apply the model's ``labels`` option to one class name."""
    labels = model.labels
    if labels is None:
        return label
    if isinstance(labels, Mapping):
        if label not in labels:
            raise HfFdwError(
                f"labels has no name for class {label!r}",
                detail="labels renames: " + ", ".join(map(repr, labels)),
                hint=f'add the class to labels, e.g. \'{{"{label}": "..."}}\'',
            )
        return str(labels[label])

    match = _POSITIONAL_LABEL.fullmatch(label)
    if match:
        index = int(match.group(1))
    else:
        known = KNOWN_CLASSES.get(model.model or "", ())
        if label not in known:
            raise HfFdwError(
                f"cannot rename class {label!r} by position",
                detail=f"labels {list(labels)!r} renames LABEL_0, LABEL_1, ... "
                f"by position, but model {model.model!r} answered the class "
                f"{label!r}, whose position is not known",
                hint="give labels as an object that maps each class name, "
                f'e.g. labels => \'{{"{label}": "..."}}\'',
            )
        index = known.index(label)
    if index >= len(labels):
        raise HfFdwError(
            f"labels has no name for class {label!r}",
            detail=f"labels has {len(labels)} names, class {label!r} is "
            f"number {index} (counting from 0)",
            hint="give one name per class of the model",
        )
    return str(labels[index])


def _read_classification(answer: Any, inputs: Inputs, model: ModelSettings) -> str:
    """The top label, renamed by ``labels`` where the model has them."""
    return rename_label(_top(_scored_items(model.task, answer))["label"], model)


def _zero_shot_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any]:
    parameters = dict(model.parameters)
    if model.candidate_labels is not None:
        parameters["candidate_labels"] = list(model.candidate_labels)
    return _with_extras({"inputs": inputs[0]}, model, parameters)


def _first_mapping(task: str, answer: Any, key: str) -> Mapping[str, Any]:
    item = answer
    if isinstance(item, list) and item:
        item = item[0]
    if not isinstance(item, Mapping) or key not in item:
        raise _unexpected(task, answer, f"[{{{key}}}] or {{{key}}}")
    return item


def _text_reader(key: str) -> Callable[[Any, Inputs, ModelSettings], str]:
    def read(answer: Any, inputs: Inputs, model: ModelSettings) -> str:
        value = _first_mapping(model.task, answer, key)[key]
        if not isinstance(value, str):
            raise _unexpected(model.task, answer, f"a string in {key}")
        return value

    return read


_MASK_TOKENS = ("[MASK]", "<mask>")


def _read_fill_mask(answer: Any, inputs: Inputs, model: ModelSettings) -> str:
    if (
        isinstance(answer, list)
        and answer
        and all(isinstance(item, list) for item in answer)
    ):
        masks = answer
    else:
        masks = [answer]
    candidates = []
    for mask in masks:
        if not isinstance(mask, list) or not mask:
            raise _unexpected(model.task, answer, "a list of {sequence, score}")
        for item in mask:
            if not isinstance(item, Mapping) or not _is_number(item.get("score")):
                raise _unexpected(model.task, answer, "a list of {sequence, score}")
        candidates.append(_top(mask))

    if len(candidates) == 1:
        sequence = candidates[0].get("sequence")
        if not isinstance(sequence, str):
            raise _unexpected(model.task, answer, "a sequence string")
        return sequence

    # Several masks: each list fills one mask, so fill them in order.
    text = str(inputs[0])
    token = next((t for t in _MASK_TOKENS if t in text), None)
    if token is None or text.count(token) != len(candidates):
        raise _unexpected(model.task, answer, f"one list per mask token in {text!r}")
    for candidate in candidates:
        token_str = candidate.get("token_str")
        if not isinstance(token_str, str):
            raise _unexpected(model.task, answer, "token_str strings")
        text = text.replace(token, token_str.strip(), 1)
    return text


_read_generation = _text_reader("generated_text")


def _question_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any]:
    body = {"inputs": {"question": inputs[0], "context": inputs[1]}}
    return _with_extras(body, model, dict(model.parameters))


def _read_answer(answer: Any, inputs: Inputs, model: ModelSettings) -> str:
    items = answer if isinstance(answer, list) else [answer]
    for item in items:
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("answer"), str)
            or not _is_number(item.get("score"))
        ):
            raise _unexpected(model.task, answer, "{answer, score, start, end}")
    if not items:
        raise _unexpected(model.task, answer, "{answer, score, start, end}")
    return str(_top(items)["answer"])


def _similarity_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any]:
    body = {"inputs": {"source_sentence": inputs[0], "sentences": [inputs[1]]}}
    return _with_extras(body, model, dict(model.parameters))


def _read_similarity(answer: Any, inputs: Inputs, model: ModelSettings) -> float:
    if isinstance(answer, list) and len(answer) == 1 and _is_number(answer[0]):
        return float(answer[0])
    raise _unexpected(model.task, answer, "a list with one float")


def _embedding_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any]:
    # Feature extraction takes its options (normalize, truncate...) at the
    # top level of the body, not under "parameters".
    body: dict[str, Any] = dict(model.parameters)
    body["inputs"] = inputs[0]
    if model.options:
        body["options"] = dict(model.options)
    return body


def _embedding_batch_body(
    group: Sequence[Inputs], model: ModelSettings
) -> dict[str, Any]:
    body: dict[str, Any] = dict(model.parameters)
    body["inputs"] = [inputs[0] for inputs in group]
    if model.options:
        body["options"] = dict(model.options)
    return body


def _read_embedding_batch(
    answer: Any, group: Sequence[Inputs], model: ModelSettings
) -> list[list[float]]:
    """One vector per input, in order; anything else fails the group."""
    if not isinstance(answer, list) or len(answer) != len(group):
        got = len(answer) if isinstance(answer, list) else type(answer).__name__
        raise HfFdwError(
            "a batched answer does not line up with its inputs",
            detail=f"sent {len(group)} inputs, got {got} results",
            hint="this endpoint does not batch feature-extraction; set batch_size to 1",
        )
    return [
        _read_embedding([vector], inputs, model)
        for vector, inputs in zip(answer, group)
    ]


def _read_embedding(answer: Any, inputs: Inputs, model: ModelSettings) -> list[float]:
    vector = answer
    if isinstance(vector, list) and len(vector) == 1 and isinstance(vector[0], list):
        vector = vector[0]
    if isinstance(vector, list) and vector and all(_is_number(x) for x in vector):
        return [float(x) for x in vector]
    if isinstance(vector, list) and vector and isinstance(vector[0], list):
        raise HfFdwError(
            "the model returned one vector per token, not one per text",
            detail="feature-extraction answered a 2-D list for a single input",
            hint="use a sentence-embedding model (one with pooling), such as "
            "sentence-transformers/all-MiniLM-L6-v2",
        )
    raise _unexpected(model.task, answer, "a list of floats")


def _media_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any] | RawBody:
    """Raw bytes when there is nothing else to say; else base64 in JSON."""
    media = inputs[0]
    parameters = dict(model.parameters)
    if not parameters and not model.options:
        return RawBody(media.data, media.mime)
    body = {"inputs": base64.b64encode(media.data).decode("ascii")}
    return _with_extras(body, model, parameters)


def _read_detections(
    answer: Any, inputs: Inputs, model: ModelSettings
) -> list[dict[str, Any]]:
    if not isinstance(answer, list):
        raise _unexpected(model.task, answer, "a list of {label, score, box}")
    for item in answer:
        box = item.get("box") if isinstance(item, Mapping) else None
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("label"), str)
            or not _is_number(item.get("score"))
            or not isinstance(box, Mapping)
            or not all(_is_number(box.get(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        ):
            raise _unexpected(model.task, answer, "a list of {label, score, box}")
    return sorted(answer, key=lambda item: -item["score"])


def _read_entities(
    answer: Any, inputs: Inputs, model: ModelSettings
) -> list[dict[str, Any]]:
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list):
        answer = answer[0]
    if not isinstance(answer, list):
        raise _unexpected(model.task, answer, "a list of {entity_group, score, word}")
    for item in answer:
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("entity_group", item.get("entity")), str)
            or not _is_number(item.get("score"))
        ):
            raise _unexpected(
                model.task, answer, "a list of {entity_group, score, word}"
            )
    return list(answer)


_read_transcript = _text_reader("text")


def _top_score(answer: Any) -> float | None:
    """The best score in any of the scored shapes, or None."""
    if isinstance(answer, Mapping):
        if isinstance(answer.get("scores"), list) and answer["scores"]:
            return float(max(answer["scores"]))
        answer = [answer]
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list):
        answer = answer[0]
    if isinstance(answer, list) and answer and all(isinstance(a, list) for a in answer):
        answer = answer[0]  # fill-mask with several masks: the first mask's
    scores = [
        item["score"]
        for item in (answer if isinstance(answer, list) else [])
        if isinstance(item, Mapping) and _is_number(item.get("score"))
    ]
    return float(max(scores)) if scores else None


def _similarity_score(answer: Any) -> float | None:
    if isinstance(answer, list) and len(answer) == 1 and _is_number(answer[0]):
        return float(answer[0])
    return None


def _table_question_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any]:
    table = inputs[1]
    if isinstance(table, str):
        try:
            table = json.loads(table)
        except ValueError:
            table = None
    if not isinstance(table, Mapping) or not all(
        isinstance(cells, list) for cells in table.values()
    ):
        raise HfFdwError(
            "the table must be a JSON object of columns",
            detail=f"got: {str(inputs[1])[:100]}",
            hint='e.g. \'{"Repository": ["Transformers", "Datasets"], '
            '"Stars": ["36542", "4512"]}\'',
        )
    body = {"inputs": {"query": inputs[0], "table": dict(table)}}
    return _with_extras(body, model, dict(model.parameters))


def _read_image(answer: Any, inputs: Inputs, model: ModelSettings) -> bytes:
    """Raw image bytes, or base64 in JSON as some providers send."""
    if isinstance(answer, RawBody):
        return answer.data
    encoded = answer
    if isinstance(answer, Mapping):
        encoded = answer.get("image") or answer.get("images")
    if isinstance(encoded, list) and encoded:
        encoded = encoded[0]
    if isinstance(encoded, str):
        try:
            data = base64.b64decode(encoded.split(",")[-1], validate=True)
        except ValueError:
            data = b""
        if (sniff_mime(data) or "").startswith("image/"):
            return data
    raise _unexpected(model.task, answer, "image bytes")


LABEL_FIELDS = {"label": "text", "score": "number"}
# xmin and xmax are PostgreSQL's own system columns: the box's are box_*.
BOX_FIELDS = {
    **LABEL_FIELDS,
    "box_xmin": "number",
    "box_ymin": "number",
    "box_xmax": "number",
    "box_ymax": "number",
}
ENTITY_FIELDS = {
    "entity_group": "text",
    "score": "number",
    "word": "text",
    "start": "number",
    "end": "number",
}
MASK_FIELDS = {
    "sequence": "text",
    "score": "number",
    "token": "number",
    "token_str": "text",
}
CHUNK_FIELDS = {"text": "text", "start": "number", "end": "number"}
ANSWER_FIELDS = {
    "answer": "text",
    "score": "number",
    "start": "number",
    "end": "number",
}


def _label_items(answer: Any, model: ModelSettings) -> list[dict[str, Any]]:
    items = sorted(_scored_items(model.task, answer), key=lambda i: -i["score"])
    return [
        {"label": rename_label(item["label"], model), "score": item["score"]}
        for item in items
    ]


def _box_items(answer: Any, model: ModelSettings) -> list[dict[str, Any]]:
    return [
        {
            "label": item["label"],
            "score": item["score"],
            **{f"box_{edge}": value for edge, value in item["box"].items()},
        }
        for item in _read_detections(answer, (), model)
    ]


def _entity_items(answer: Any, model: ModelSettings) -> list[dict[str, Any]]:
    return [
        {**item, "entity_group": item.get("entity_group", item.get("entity"))}
        for item in _read_entities(answer, (), model)
    ]


def _mask_items(answer: Any, model: ModelSettings) -> list[dict[str, Any]]:
    if isinstance(answer, list) and answer and isinstance(answer[0], list):
        raise HfFdwError(
            "row_per_item gives the candidates of one mask, and the text has several",
            hint="put one mask token in each text",
        )
    _read_fill_mask(answer, ("",), model)  # checks the shape
    return sorted(answer, key=lambda item: -item["score"])


def _chunk_items(answer: Any, model: ModelSettings) -> list[dict[str, Any]]:
    text = _read_transcript(answer, (), model)
    chunks = answer.get("chunks") if isinstance(answer, Mapping) else None
    if not isinstance(chunks, list) or not chunks:
        return [{"text": text, "start": None, "end": None}]
    items = []
    for chunk in chunks:
        stamp = chunk.get("timestamp") if isinstance(chunk, Mapping) else None
        if (
            not isinstance(chunk, Mapping)
            or not isinstance(chunk.get("text"), str)
            or not isinstance(stamp, (list, tuple))
            or len(stamp) != 2
        ):
            raise _unexpected(model.task, answer, "chunks of {text, timestamp}")
        items.append({"text": chunk["text"], "start": stamp[0], "end": stamp[1]})
    return items


def _answer_items(answer: Any, model: ModelSettings) -> list[dict[str, Any]]:
    _read_answer(answer, (), model)  # checks the shape
    items = answer if isinstance(answer, list) else [answer]
    return sorted(items, key=lambda item: -item["score"])


def _chat_body(inputs: Inputs, model: ModelSettings) -> dict[str, Any]:
    """One user message; parameters (max_tokens, temperature...) beside it."""
    body: dict[str, Any] = {
        "model": model.model,
        "messages": [{"role": "user", "content": inputs[0]}],
        **dict(model.parameters),
    }
    body["stream"] = False
    return body


def _read_chat(answer: Any, inputs: Inputs, model: ModelSettings) -> str:
    choices = answer.get("choices") if isinstance(answer, Mapping) else None
    message = (
        choices[0].get("message")
        if (isinstance(choices, list) and choices and isinstance(choices[0], Mapping))
        else None
    )
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str):
        raise _unexpected(model.task, answer, "{choices: [{message: {content}}]}")
    return content


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "text-classification",
            ("text",),
            "text",
            "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
            _text_body,
            _read_classification,
            read_score=_top_score,
            item_fields=LABEL_FIELDS,
            read_items=_label_items,
        ),
        Task(
            "zero-shot-classification",
            ("text",),
            "text",
            "facebook/bart-large-mnli",
            _zero_shot_body,
            _read_classification,
            read_score=_top_score,
            item_fields=LABEL_FIELDS,
            read_items=_label_items,
        ),
        Task(
            "sentence-similarity",
            ("source", "sentence"),
            "double precision",
            "sentence-transformers/all-MiniLM-L6-v2",
            _similarity_body,
            _read_similarity,
            pipeline="sentence-similarity",
            read_score=_similarity_score,
        ),
        Task(
            "question-answering",
            ("question", "context"),
            "text",
            "deepset/roberta-base-squad2",
            _question_body,
            _read_answer,
            read_score=_top_score,
            item_fields=ANSWER_FIELDS,
            read_items=_answer_items,
        ),
        Task(
            "summarization",
            ("text",),
            "text",
            "facebook/bart-large-cnn",
            _text_body,
            _text_reader("summary_text"),
        ),
        Task(
            # The old default, gpt2, is no longer served by the hosted API.
            "text-generation",
            ("text",),
            "text",
            None,
            _text_body,
            _read_generation,
            default_cache_ttl=0.0,
        ),
        Task(
            "fill-mask",
            ("text",),
            "text",
            "google-bert/bert-base-uncased",
            _text_body,
            _read_fill_mask,
            read_score=_top_score,
            item_fields=MASK_FIELDS,
            read_items=_mask_items,
        ),
        Task(
            "translation",
            ("text",),
            "text",
            "google-t5/t5-small",
            _text_body,
            _text_reader("translation_text"),
        ),
        Task(
            "feature-extraction",
            ("text",),
            "double precision[]",
            "sentence-transformers/all-MiniLM-L6-v2",
            _embedding_body,
            _read_embedding,
            pipeline="feature-extraction",
            build_batch=_embedding_batch_body,
            read_batch=_read_embedding_batch,
        ),
        Task(
            "token-classification",
            ("text",),
            "jsonb",
            "dslim/bert-base-NER",
            _text_body,
            _read_entities,
            item_fields=ENTITY_FIELDS,
            read_items=_entity_items,
        ),
        Task(
            "table-question-answering",
            ("question", "table"),
            "text",
            "google/tapas-base-finetuned-wtq",
            _table_question_body,
            _text_reader("answer"),
        ),
        Task(
            # Chat models through the router's OpenAI-style route.
            "chat-completion",
            ("text",),
            "text",
            None,
            _chat_body,
            _read_chat,
            default_cache_ttl=0.0,
            chat=True,
        ),
        Task(
            "text-to-image",
            ("text",),
            "bytea",
            "black-forest-labs/FLUX.1-schnell",
            _text_body,
            _read_image,
            # Images are large and generation may differ each time.
            default_cache_ttl=0.0,
        ),
        Task(
            "image-classification",
            ("media",),
            "text",
            "google/vit-base-patch16-224",
            _media_body,
            _read_classification,
            media=True,
            read_score=_top_score,
            item_fields=LABEL_FIELDS,
            read_items=_label_items,
        ),
        Task(
            "object-detection",
            ("media",),
            "jsonb",
            "facebook/detr-resnet-50",
            _media_body,
            _read_detections,
            media=True,
            item_fields=BOX_FIELDS,
            read_items=_box_items,
        ),
        Task(
            "image-to-text",
            ("media",),
            "text",
            "Salesforce/blip-image-captioning-base",
            _media_body,
            _read_generation,
            media=True,
        ),
        Task(
            "automatic-speech-recognition",
            ("media",),
            "text",
            "facebook/wav2vec2-base-960h",
            _media_body,
            _read_transcript,
            media=True,
            item_fields=CHUNK_FIELDS,
            read_items=_chunk_items,
        ),
        Task(
            "audio-classification",
            ("media",),
            "text",
            "superb/hubert-large-superb-er",
            _media_body,
            _read_classification,
            media=True,
            read_score=_top_score,
            item_fields=LABEL_FIELDS,
            read_items=_label_items,
        ),
    )
}


def get_task(name: str) -> Task:
    """Return the task called ``name``, or say which tasks exist."""
    try:
        return TASKS[name]
    except KeyError:
        raise HfFdwError(
            f"unknown task {name!r}",
            hint="use one of: " + ", ".join(sorted(TASKS)),
        ) from None


def error_in_answer(answer: Any) -> str | None:
    """The provider's own words when a 200 answer is really an error (C12)."""
    if isinstance(answer, Mapping) and "error" in answer:
        error = answer["error"]
        if isinstance(error, list):
            return "; ".join(str(part) for part in error)
        return str(error)
    return None
