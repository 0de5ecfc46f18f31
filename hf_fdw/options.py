"""Every option hf_fdw reads: its level, its type, its default, its error.

Multicorn hands the FDW one dict that merges, in this order, the foreign
table's options, the server's (the engine's) and the current user's mapping,
a later level silently overwriting an earlier one. So the three levels use
names that never collide:

- server (engine): ``engine_name``, ``engine_endpoint``, ``engine_options``;
- user mapping: ``api_key``;
- foreign table (model): everything in ``TABLE_OPTIONS``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hf_fdw.errors import HfFdwError
from hf_fdw.tasks import TASKS, Task, get_task

ROUTER_URL = "https://router.huggingface.co/hf-inference"
RETIRED_HOSTS = ("api-inference.huggingface.co",)

SERVER_OPTIONS = ("engine_name", "engine_endpoint", "engine_options")
MAPPING_OPTIONS = ("api_key",)
TABLE_OPTIONS = (
    "task",
    "model",
    "endpoint",
    "input_column",
    "context_column",
    "input_column2",
    "target_column",
    "candidate_labels",
    "labels",
    "parameters",
    "options",
    "row_per_item",
)

# Which option names the column of each input role.
ROLE_OPTIONS = {
    "text": "input_column",
    "question": "input_column",
    "source": "input_column",
    "context": "context_column",
    "sentence": "input_column2",
    "media": "input_column",
    "table": "context_column",
}

# What an input column may be: text for text tasks; for image and audio the
# file's bytes (bytea) or an http(s) URL (text).
_INPUT_TYPES = {
    False: ("text", "character varying", "character", "varchar", "name"),
    True: ("bytea", "text", "character varying", "varchar"),
}

# Roles whose column is not text: a table, as JSON {"column": [cells]}.
ROLE_TYPES = {"table": ("jsonb", "json", "text")}

# Tasks whose classes ``labels`` can rename.
LABELLED_TASKS = ("text-classification", "image-classification", "audio-classification")

# Extra columns a table may have, marked with a column option (value '...').
EXTRA_VALUES = {
    "score": ("double precision", "real", "numeric"),
    "answer": ("jsonb", "json", "text"),
}

# Engine settings given as create_engine(options => '{...}'): kind, default,
# bounds (numbers) or allowed values (words). All but api_key_env can also be
# set per model, as foreign table options, which win over the engine's.
ENGINE_SETTINGS: dict[str, tuple[type, Any, Any, Any]] = {
    "timeout": (float, 30.0, 0.1, 600.0),
    "max_retries": (int, 3, 0, 10),
    "concurrency": (int, 8, 1, 64),
    "max_requests": (int, 10_000, 1, 100_000_000),
    "on_error": (str, "raise", ("raise", "null"), None),
    # None: the task's default (600 s; 0, the transaction only, for
    # text-generation, whose answers may differ each time).
    "cache_ttl": (float, None, 0.0, 604_800.0),
    "verbose": (bool, False, None, None),
    "max_media_bytes": (int, 20 * 1024 * 1024, 1024, 100 * 1024 * 1024),
    # Inputs per request where the task can batch (feature-extraction).
    "batch_size": (int, 1, 1, 256),
    # Engine only: a table owner must not open what the engine's owner closed.
    "allow_private_urls": (bool, False, None, None),
    "api_key_env": (str, None, None, None),
}
MODEL_SETTINGS = tuple(
    name
    for name in ENGINE_SETTINGS
    if name not in ("allow_private_urls", "api_key_env")
)
# A foreign table's options: the model's own, then its overrides of settings.
TABLE_OPTIONS = TABLE_OPTIONS + MODEL_SETTINGS

_VALUE_TYPES = {
    # No length limit: a longer prediction must not be cut or refused.
    "text": ("text", "character varying", "varchar"),
    "double precision": ("double precision", "real", "numeric"),
    "double precision[]": ("double precision[]", "real[]", "numeric[]"),
    "jsonb": ("jsonb", "json"),
    "bytea": ("bytea",),
}

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_endpoint(url: str, option: str) -> str:
    """Validate an endpoint URL and return it, trimmed of white space."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise HfFdwError(
            f"{option} is not an http(s) URL: {url!r}",
            hint="give a URL such as https://<name>.endpoints.huggingface.cloud "
            "or http://127.0.0.1:8080",
        )
    if parts.hostname.lower() in RETIRED_HOSTS:
        raise HfFdwError(
            f"{option} names the retired host {parts.hostname}",
            detail="the serverless Inference API moved; the old host answers 410 Gone",
            hint=f"use the router: {ROUTER_URL} (the default when no "
            "endpoint is given)",
        )
    if parts.username or parts.password:
        raise HfFdwError(
            f"{option} must not carry credentials in the URL",
            hint="give the key as api_key, which is kept in a user mapping",
        )
    return url.strip()


def _json_option(options: Mapping[str, str], name: str) -> Any:
    raw = options.get(name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise HfFdwError(
            f"option {name} is not valid JSON",
            detail=str(exc),
            hint=f'write {name} as JSON, e.g. {name} \'{{"key": "value"}}\'',
        ) from None


def _json_object(options: Mapping[str, str], name: str) -> dict[str, Any]:
    value = _json_option(options, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HfFdwError(
            f"option {name} must be a JSON object",
            detail=f"got {type(value).__name__}: {options[name]}",
        )
    return value


@dataclass(frozen=True)
class EngineSettings:
    """An engine: where requests go and how they are made."""

    name: str
    endpoint: str
    timeout: float
    max_retries: int
    concurrency: int
    max_requests: int = 10_000
    on_error: str = "raise"
    cache_ttl: float | None = None
    verbose: bool = False
    max_media_bytes: int = 20 * 1024 * 1024
    batch_size: int = 1
    allow_private_urls: bool = False
    api_key: str | None = field(default=None, repr=False)

    @property
    def is_hosted(self) -> bool:
        host = urlsplit(self.endpoint).hostname or ""
        return host == "huggingface.co" or host.endswith(".huggingface.co")


def parse_engine_options(
    raw: Mapping[str, Any] | None, what: str = "engine option"
) -> dict[str, Any]:
    """Check an engine's ``options`` object and fill in the defaults."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(ENGINE_SETTINGS))
    if unknown:
        raise HfFdwError(
            f"unknown {what} " + ", ".join(repr(u) for u in unknown),
            hint=f"{what}s are: " + ", ".join(ENGINE_SETTINGS),
        )
    settings: dict[str, Any] = {}
    for name, (kind, default, low, high) in ENGINE_SETTINGS.items():
        value = raw.get(name)
        if value is None:
            value = default
        if value is None:
            settings[name] = None
            continue
        if kind is str and isinstance(low, tuple):
            if value not in low:
                raise HfFdwError(
                    f"{what} {name} must be one of: " + ", ".join(low),
                    detail=f"got {value!r}",
                )
            settings[name] = value
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise HfFdwError(
                    f"{what} {name} must be true or false", detail=f"got {value!r}"
                )
            settings[name] = value
            continue
        if kind is str:
            if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
                raise HfFdwError(
                    f"{what} {name} must name an environment variable",
                    detail=f"got {value!r}",
                )
            settings[name] = value
            continue
        number_ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and low <= value <= high  # also False for NaN
        )
        if kind is int and number_ok and float(value) != int(value):
            number_ok = False
        if not number_ok:
            raise HfFdwError(
                f"{what} {name} must be a number from {low} to {high}",
                detail=f"got {value!r}",
            )
        settings[name] = kind(value)
    return settings


@dataclass(frozen=True)
class ModelSettings:
    """A model: task, model id, columns and what goes into each body."""

    task: str
    model: str | None
    endpoint: str | None
    input_columns: tuple[str, ...]
    target_column: str
    parameters: Mapping[str, Any]
    options: Mapping[str, Any]
    labels: list[Any] | dict[str, Any] | None
    candidate_labels: tuple[str, ...] | None
    score_column: str | None = None
    answer_column: str | None = None
    # With row_per_item: the item fields, one column each (else empty).
    item_columns: tuple[str, ...] = ()

    @property
    def spec(self) -> Task:
        return TASKS[self.task]

    @property
    def value_type(self) -> str:
        return TASKS[self.task].value_type


def _parse_labels(options: Mapping[str, str]) -> list[Any] | dict[str, Any] | None:
    labels = _json_option(options, "labels")
    if labels is None:
        return None
    if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
        return labels
    if (
        isinstance(labels, dict)
        and labels
        and all(isinstance(v, str) for v in labels.values())
    ):
        return labels
    raise HfFdwError(
        "labels must be a non-empty JSON array or object of strings",
        detail=f"got: {options['labels']}",
        hint="an array renames LABEL_0, LABEL_1, ... by position: "
        '\'["ham", "spam"]\'; an object renames by name: '
        '\'{"NEGATIVE": "ham", "POSITIVE": "spam"}\'',
    )


def _parse_candidate_labels(
    options: Mapping[str, str], parameters: Mapping[str, Any]
) -> tuple[str, ...] | None:
    value = _json_option(options, "candidate_labels")
    if value is None:
        value = parameters.get("candidate_labels")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(x, str) and x for x in value)
    ):
        raise HfFdwError(
            "candidate_labels must be a non-empty list of strings",
            detail=f"got: {value!r}",
        )
    return tuple(value)


def _column_type(columns: Mapping[str, Any], name: str) -> str:
    column = columns[name]
    type_name = getattr(column, "type_name", None) or "text"
    return str(type_name).lower()


def parse_model(
    options: Mapping[str, str], columns: Mapping[str, Any]
) -> ModelSettings:
    """Validate a foreign table's options against its columns."""
    known = set(SERVER_OPTIONS) | set(MAPPING_OPTIONS) | set(TABLE_OPTIONS)
    unknown = sorted(set(options) - known)
    if unknown:
        raise HfFdwError(
            "unknown option " + ", ".join(repr(u) for u in unknown),
            hint="foreign table options are: " + ", ".join(TABLE_OPTIONS),
        )

    task_name = options.get("task")
    if not task_name:
        raise HfFdwError(
            "option task is required",
            hint="add OPTIONS (task 'text-classification', ...); tasks: "
            + ", ".join(sorted(TASKS)),
        )
    task = get_task(task_name)

    # A model's own endpoint serves whatever model it serves: no default then.
    endpoint = options.get("endpoint")
    if endpoint:
        endpoint = check_endpoint(endpoint, "endpoint")
    model = options.get("model") or (None if endpoint else task.default_model)
    if not model and not endpoint:
        raise HfFdwError(
            f"task {task.name} has no default model",
            hint="name one: model_name => '<owner>/<model>' "
            "(or OPTIONS (model '...')), or give the model's own endpoint",
        )

    input_columns = []
    for role in task.roles:
        option = ROLE_OPTIONS[role]
        column = options.get(option) or ("text" if option == "input_column" else None)
        if not column:
            raise HfFdwError(
                f"task {task.name} needs option {option}",
                hint=f"name the column that holds the {role}: {option} => '<column>'",
            )
        if column not in columns:
            raise HfFdwError(
                f"{option} {column!r} is not a column of the table",
                detail="columns: " + ", ".join(columns),
            )
        if column in input_columns:
            raise HfFdwError(
                f"column {column!r} is used for two inputs",
                hint="use a different column for each input",
            )
        input_type = _base_type(_column_type(columns, column))
        allowed = ROLE_TYPES.get(role) or _INPUT_TYPES[task.media]
        if input_type not in allowed:
            raise HfFdwError(
                f"input column {column!r} has type {input_type}, but task "
                f"{task.name} reads " + " or ".join(allowed[:2]),
                hint="declare it "
                + (
                    "bytea (the file's bytes) or text (an http(s) URL)"
                    if task.media
                    else allowed[0]
                ),
            )
        input_columns.append(column)

    extras = _extra_columns(columns, input_columns)
    item_columns = _item_columns(options, task, columns, input_columns, extras)
    target = options.get("target_column")
    if item_columns:
        target = item_columns[0]
    if target is None:
        others = [
            c for c in columns if c not in input_columns and c not in extras.values()
        ]
        if len(others) != 1:
            raise HfFdwError(
                "cannot tell which column receives the prediction",
                detail="columns other than the inputs: "
                + (", ".join(others) or "none"),
                hint="add OPTIONS (target_column '<column>')",
            )
        target = others[0]
    if target not in columns:
        raise HfFdwError(
            f"target_column {target!r} is not a column of the table",
            detail="columns: " + ", ".join(columns),
        )
    if target in input_columns or target in extras.values():
        raise HfFdwError(
            f"column {target!r} cannot be both an input and the prediction",
            hint="give the prediction its own column",
        )
    type_name = _column_type(columns, target)
    accepted = _VALUE_TYPES[task.value_type]
    if not item_columns and (
        _base_type(type_name) not in accepted
        or (task.value_type == "text" and type_name != _base_type(type_name))
    ):
        raise HfFdwError(
            f"column {target!r} has type {type_name}, but task {task.name} "
            f"gives {task.value_type}",
            hint=f"declare the column as {task.value_type}",
        )

    parameters = _json_object(options, "parameters")
    body_options = _json_object(options, "options")
    misplaced = sorted(set(body_options) & set(ENGINE_SETTINGS))
    if misplaced:
        raise HfFdwError(
            "options holds hf_fdw settings: " + ", ".join(misplaced),
            detail="options is the request body's options field, sent to the "
            "endpoint as it is",
            hint=f"set {misplaced[0]} on the model's table instead: ALTER FOREIGN "
            f"TABLE ... OPTIONS (ADD {misplaced[0]} '...'), or as an engine option",
        )
    labels = _parse_labels(options)
    if labels is not None and task.name not in LABELLED_TASKS:
        raise HfFdwError(
            "labels applies to " + ", ".join(LABELLED_TASKS) + " only",
            hint="for zero-shot-classification use candidate_labels",
        )
    if extras.get("score") and task.read_score is None:
        raise HfFdwError(
            f"task {task.name} gives no single score",
            hint="drop the column's option value 'score'; a column with "
            "OPTIONS (value 'answer') shows the whole answer",
        )
    candidate_labels = _parse_candidate_labels(options, parameters)
    if task.name == "zero-shot-classification" and candidate_labels is None:
        raise HfFdwError(
            "zero-shot-classification needs candidate_labels",
            hint="candidate_labels => ARRAY['refund', 'legal', 'faq']",
        )
    if candidate_labels is not None and task.name != "zero-shot-classification":
        raise HfFdwError("candidate_labels applies to zero-shot-classification only")

    return ModelSettings(
        task=task.name,
        model=model,
        endpoint=endpoint,
        input_columns=tuple(input_columns),
        target_column=target,
        parameters=parameters,
        options=body_options,
        labels=labels,
        candidate_labels=candidate_labels,
        score_column=extras.get("score"),
        answer_column=extras.get("answer"),
        item_columns=item_columns,
    )


_NUMBER_TYPES = ("double precision", "real", "numeric", "integer", "bigint", "smallint")


def _item_columns(
    options: Mapping[str, str],
    task: Task,
    columns: Mapping[str, Any],
    input_columns: list[str],
    extras: Mapping[str, str],
) -> tuple[str, ...]:
    """With row_per_item 'true': the columns that take an item's fields."""
    flag = (options.get("row_per_item") or "false").lower()
    if flag not in ("true", "false", "on", "off"):
        raise HfFdwError(
            "option row_per_item must be true or false",
            detail=f"got {options['row_per_item']!r}",
        )
    if flag in ("false", "off"):
        return ()
    if task.item_fields is None:
        with_items = sorted(name for name, t in TASKS.items() if t.item_fields)
        raise HfFdwError(
            f"task {task.name} gives one value, not items",
            hint="row_per_item works for: " + ", ".join(with_items),
        )
    if options.get("target_column"):
        raise HfFdwError(
            "row_per_item and target_column do not go together",
            hint="each item field has a column of its name",
        )
    fields = task.item_fields
    chosen = [c for c in columns if c not in input_columns and c not in extras.values()]
    if not chosen:
        raise HfFdwError(
            "row_per_item needs a column per item field",
            hint=f"task {task.name} gives: " + ", ".join(fields),
        )
    for name in chosen:
        if name not in fields:
            raise HfFdwError(
                f"column {name!r} is no field of a {task.name} item",
                hint="name the columns after the fields: " + ", ".join(fields),
            )
        type_name = _base_type(_column_type(columns, name))
        wanted = _NUMBER_TYPES if fields[name] == "number" else ("text",)
        if type_name not in wanted:
            raise HfFdwError(
                f"column {name!r} has type {type_name}, but the field is a "
                + fields[name],
                hint="declare it " + wanted[0],
            )
    return tuple(chosen)


def _base_type(type_name: str) -> str:
    """``character varying(20)`` -> ``character varying``."""
    return re.sub(r"\(.*?\)", "", type_name).strip()


def _extra_columns(
    columns: Mapping[str, Any], input_columns: list[str]
) -> dict[str, str]:
    """The columns marked OPTIONS (value 'score') or (value 'answer')."""
    extras: dict[str, str] = {}
    for name, column in columns.items():
        value = (getattr(column, "options", None) or {}).get("value")
        if value is None:
            continue
        if value not in EXTRA_VALUES:
            raise HfFdwError(
                f"column {name!r} has option value {value!r}",
                hint="a column's option value is 'score' or 'answer'",
            )
        if value in extras:
            raise HfFdwError(f"two columns have option value {value!r}")
        if name in input_columns:
            raise HfFdwError(f"input column {name!r} cannot have option value")
        type_name = _base_type(_column_type(columns, name))
        if type_name not in EXTRA_VALUES[value]:
            raise HfFdwError(
                f"column {name!r} has type {type_name}, but the {value} is "
                + EXTRA_VALUES[value][0],
                hint=f"declare the column as {EXTRA_VALUES[value][0]}",
            )
        extras[value] = name
    return extras


def parse_engine(
    options: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> EngineSettings:
    """Read the engine (server) options and the user mapping's key."""
    environ = os.environ if environ is None else environ
    endpoint = check_endpoint(
        options.get("engine_endpoint") or ROUTER_URL, "engine endpoint"
    ).rstrip("/")
    settings = parse_engine_options(_json_object(options, "engine_options"))
    overrides = _model_overrides(options)
    if overrides:
        model_settings = parse_engine_options(overrides, "option")
        settings.update({name: model_settings[name] for name in overrides})

    api_key = options.get("api_key") or None
    if api_key is None and settings["api_key_env"]:
        api_key = environ.get(settings["api_key_env"]) or None
    return EngineSettings(
        name=options.get("engine_name") or "(unnamed)",
        endpoint=endpoint,
        timeout=settings["timeout"],
        max_retries=settings["max_retries"],
        concurrency=settings["concurrency"],
        max_requests=settings["max_requests"],
        on_error=settings["on_error"],
        cache_ttl=settings["cache_ttl"],
        verbose=settings["verbose"],
        max_media_bytes=settings["max_media_bytes"],
        batch_size=settings["batch_size"],
        allow_private_urls=settings["allow_private_urls"],
        api_key=api_key,
    )


def _model_overrides(options: Mapping[str, str]) -> dict[str, Any]:
    """The engine settings a foreign table overrides, read from their text."""
    overrides: dict[str, Any] = {}
    for name in MODEL_SETTINGS:
        text = options.get(name)
        if text is None:
            continue
        kind = ENGINE_SETTINGS[name][0]
        if kind is str:
            overrides[name] = text
            continue
        if kind is bool:
            if text.lower() not in ("true", "false", "on", "off"):
                raise HfFdwError(
                    f"option {name} must be true or false", detail=f"got {text!r}"
                )
            overrides[name] = text.lower() in ("true", "on")
            continue
        try:
            overrides[name] = kind(text)
        except ValueError:
            raise HfFdwError(
                f"option {name} must be a number",
                detail=f"got {text!r}",
            ) from None
    return overrides


def request_url(engine: EngineSettings, model: ModelSettings) -> str:
    """Where one model's requests go.

    A model's own endpoint is called verbatim (case C7). Otherwise the
    engine's base URL speaks the router's protocol:
    ``{endpoint}/models/{model}``, plus ``/pipeline/{task}`` for the tasks
    a multi-task embedding model must be told.
    """
    if model.endpoint:
        return model.endpoint
    if model.spec.chat:
        # The OpenAI-style route sits at the router's root, beside the
        # provider prefixes (/hf-inference); TGI serves it at its root too.
        base = engine.endpoint
        if base.endswith("/hf-inference"):
            base = base[: -len("/hf-inference")]
        return f"{base}/v1/chat/completions"
    url = f"{engine.endpoint}/models/{model.model}"
    if model.spec.pipeline:
        url += f"/pipeline/{model.spec.pipeline}"
    return url
