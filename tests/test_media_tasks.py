"""Image and audio tasks, entities, and the whole answer, through SQL."""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from typing import Any

import pytest
from fix_pg import sql_error
from fix_http import Reply

psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG image, grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (
            struct.pack(">I", len(data))
            + body
            + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wav(frames: int = 1600) -> bytes:
    """A real WAV file: 0.1 s of silence at 16 kHz."""
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(16000)
        sound.writeframes(b"\x00\x00" * frames)
    return out.getvalue()


def engine(db: Any, endpoint: Any, allow_private: bool = False) -> None:
    options = {"allow_private_urls": True} if allow_private else {}
    db.execute(
        "SELECT hf_fdw.create_engine('local', endpoint => %s, options => %s)",
        (endpoint.url, json.dumps(options)),
    )


VIT = "/models/google/vit-base-patch16-224"
CAT = [{"label": "tabby cat", "score": 0.82}, {"label": "tiger cat", "score": 0.11}]


def test_image_classification_from_bytea(db: Any, endpoint: Any) -> None:
    endpoint.script(VIT, Reply(CAT))
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('pets', 'label', 'local', "
        "task => 'image-classification', input_column => 'image')"
    )
    assert db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'pets'::regclass AND attname = 'image'"
    ).fetchone() == ("bytea",)
    picture = png()
    db.execute("CREATE TEMP TABLE photos (id int, data bytea)")
    db.execute("INSERT INTO photos VALUES (1, %s), (2, %s)", (picture, picture))
    rows = db.execute(
        "SELECT p.id, c.label FROM photos p JOIN pets c ON c.image = p.data "
        "ORDER BY p.id"
    ).fetchall()
    assert rows == [(1, "tabby cat"), (2, "tabby cat")]
    sent = endpoint.requests_to(VIT)
    assert len(sent) == 1  # the same picture is asked for once
    assert sent[0].headers["Content-Type"] == "image/png"
    assert sent[0].body == picture


def test_score_and_whole_answer_columns(db: Any, endpoint: Any) -> None:
    endpoint.script(VIT, Reply(CAT))
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('pets', 'label', 'local', "
        "task => 'image-classification', input_column => 'image')"
    )
    db.execute(
        "ALTER FOREIGN TABLE pets "
        "ADD COLUMN confidence double precision OPTIONS (value 'score'), "
        "ADD COLUMN answer jsonb OPTIONS (value 'answer')"
    )
    row = db.execute(
        "SELECT label, confidence, answer FROM pets WHERE image = %s", (png(),)
    ).fetchone()
    assert row == ("tabby cat", 0.82, CAT)


def test_parameters_send_base64_json(db: Any, endpoint: Any) -> None:
    endpoint.script(VIT, Reply(CAT))
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('pets', 'label', 'local', "
        "task => 'image-classification', input_column => 'image', "
        "parameters => '{\"top_k\": 2}')"
    )
    picture = png()
    db.execute("SELECT label FROM pets WHERE image = %s", (picture,)).fetchall()
    import base64

    assert endpoint.requests_to(VIT)[0].json == {
        "inputs": base64.b64encode(picture).decode(),
        "parameters": {"top_k": 2},
    }


def test_speech_recognition_from_a_url(db: Any, endpoint: Any) -> None:
    path = "/models/facebook/wav2vec2-base-960h"
    endpoint.script(path, Reply({"text": "HELLO WORLD"}))
    sound = wav()
    url = endpoint.serve_file("/media/hello.wav", sound, "audio/wav")
    engine(db, endpoint, allow_private=True)
    db.execute(
        "SELECT hf_fdw.create_model('speech', 'transcript', 'local', "
        "task => 'automatic-speech-recognition', input_column => 'audio')"
    )
    rows = db.execute(
        "SELECT convert_from(audio, 'UTF8'), transcript FROM speech WHERE audio = %s",
        (url.encode(),),
    ).fetchall()
    assert rows == [(url, "HELLO WORLD")]
    sent = endpoint.requests_to(path)[0]
    assert sent.headers["Content-Type"] == "audio/wav"
    assert sent.body == sound


def test_text_url_column_on_a_hand_written_table(db: Any, endpoint: Any) -> None:
    path = "/models/superb/hubert-large-superb-er"
    endpoint.script(
        path, Reply([{"label": "neu", "score": 0.6}, {"label": "hap", "score": 0.3}])
    )
    url = endpoint.serve_file("/media/voice.wav", wav(), "audio/wav")
    engine(db, endpoint, allow_private=True)
    db.execute(
        "CREATE FOREIGN TABLE mood (clip text, emotion text) SERVER local "
        "OPTIONS (task 'audio-classification', input_column 'clip', "
        'labels \'{"neu": "neutral", "hap": "happy"}\')'
    )
    assert db.execute(
        "SELECT clip, emotion FROM mood WHERE clip = %s", (url,)
    ).fetchall() == [(url, "neutral")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/etc/passwd", "paths on the database server are never read"),
        ("file:///etc/passwd", "paths on the database server are never read"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata service"),
        ("http://127.0.0.1:1/cat.png", "loopback"),
        ("http://10.0.0.1/cat.png", "private"),
    ],
)
def test_refused_media_inputs(db: Any, endpoint: Any, value: str, message: str) -> None:
    """Case C19, and addresses an engine does not allow."""
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('pets', 'label', 'local', "
        "task => 'image-classification', input_column => 'image')"
    )
    error = sql_error(db, "SELECT label FROM pets WHERE image = %s", (value.encode(),))
    assert message in str(error)
    assert endpoint.requests == []


def test_loopback_url_needs_the_engines_permission(db: Any, endpoint: Any) -> None:
    url = endpoint.serve_file("/media/cat.png", png(), "image/png")
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('pets', 'label', 'local', "
        "task => 'image-classification', input_column => 'image')"
    )
    error = sql_error(db, "SELECT label FROM pets WHERE image = %s", (url.encode(),))
    assert "loopback" in str(error)
    assert "allow_private_urls" in error.diag.message_hint
    # A model's own table options cannot open what the engine keeps closed.
    error = sql_error(
        db, "ALTER FOREIGN TABLE pets OPTIONS (ADD allow_private_urls 'true')"
    )
    assert error.diag.message_primary == "a model's table cannot set allow_private_urls"
    assert endpoint.requests_to("/media/cat.png") == []


def test_unknown_bytes_are_refused(db: Any, endpoint: Any) -> None:
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('pets', 'label', 'local', "
        "task => 'image-classification', input_column => 'image')"
    )
    error = sql_error(
        db, "SELECT label FROM pets WHERE image = %s", (b"\x00\x01not an image",)
    )
    assert "unknown media type" in error.diag.message_primary


DETR = "/models/facebook/detr-resnet-50"
BOXES = [
    {
        "label": "dog",
        "score": 0.71,
        "box": {"xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40},
    },
    {
        "label": "cat",
        "score": 0.97,
        "box": {"xmin": 5, "ymin": 6, "xmax": 50, "ymax": 60},
    },
]


def test_object_detection_gives_jsonb(db: Any, endpoint: Any) -> None:
    path, boxes = DETR, BOXES
    endpoint.script(path, Reply(boxes))
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('detector', 'objects', 'local', "
        "task => 'object-detection', input_column => 'image')"
    )
    rows = db.execute(
        "SELECT o ->> 'label', (o -> 'box' ->> 'xmax')::int "
        "FROM detector d, jsonb_array_elements(d.objects) o "
        "WHERE d.image = %s",
        (png(),),
    ).fetchall()
    assert rows == [("cat", 50), ("dog", 30)]


def test_token_classification_gives_entities(db: Any, endpoint: Any) -> None:
    path = "/models/dslim/bert-base-NER"
    entities = [
        {"entity_group": "PER", "score": 0.99, "word": "Clara", "start": 11, "end": 16},
        {
            "entity_group": "LOC",
            "score": 0.98,
            "word": "Berkeley",
            "start": 31,
            "end": 39,
        },
    ]
    endpoint.script(path, Reply(entities))
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('ner', 'entities', 'local', "
        "task => 'token-classification')"
    )
    rows = db.execute(
        "SELECT e ->> 'entity_group', e ->> 'word' FROM ner n, "
        "jsonb_array_elements(n.entities) e "
        "WHERE n.text = 'My name is Clara and I live in Berkeley'"
    ).fetchall()
    assert rows == [("PER", "Clara"), ("LOC", "Berkeley")]


def test_text_to_image_gives_bytea(db: Any, endpoint: Any) -> None:
    path = "/models/black-forest-labs/FLUX.1-schnell"
    picture = png(4, 4)
    endpoint.script(path, Reply(body=picture, headers={"Content-Type": "image/png"}))
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('painter', 'image', 'local', "
        "task => 'text-to-image', input_column => 'prompt')"
    )
    row = db.execute(
        "SELECT image, pg_typeof(image)::text FROM painter "
        "WHERE prompt = 'a grey square'"
    ).fetchone()
    assert row == (picture, "bytea")
    assert endpoint.requests_to(path)[0].json == {"inputs": "a grey square"}


def test_table_question_answering(db: Any, endpoint: Any) -> None:
    path = "/models/google/tapas-base-finetuned-wtq"
    endpoint.script(
        path,
        Reply(
            {
                "answer": "AVERAGE > 36542",
                "coordinates": [[0, 1]],
                "cells": ["36542"],
                "aggregator": "AVERAGE",
            }
        ),
    )
    engine(db, endpoint)
    db.execute(
        "SELECT hf_fdw.create_model('tables', 'answer', 'local', "
        "task => 'table-question-answering', input_column => 'query', "
        "context_column => 'data')"
    )
    table = '{"Repository": ["Transformers", "Datasets"], "Stars": ["36542", "4512"]}'
    row = db.execute(
        "SELECT answer FROM tables WHERE query = %s AND data = %s",
        ("How many stars does the transformers repository have?", table),
    ).fetchone()
    assert row == ("AVERAGE > 36542",)
    assert endpoint.requests_to(path)[0].json == {
        "inputs": {
            "query": "How many stars does the transformers repository have?",
            "table": {
                "Repository": ["Transformers", "Datasets"],
                "Stars": ["36542", "4512"],
            },
        }
    }
    error = sql_error(
        db, "SELECT answer FROM tables WHERE query = 'q' AND data = '[1]'"
    )
    assert error.diag.message_primary == "the table must be a JSON object of columns"


class TestRowPerItem:
    """OPTIONS (row_per_item 'true'): one row per box, entity, label or chunk."""

    def test_object_detection_boxes_as_rows(self, db: Any, endpoint: Any) -> None:
        endpoint.script(DETR, Reply(BOXES))
        engine(db, endpoint)
        db.execute(
            "CREATE FOREIGN TABLE boxes (image bytea, label text, "
            "score double precision, box_xmin int, box_ymin int, box_xmax int, "
            "box_ymax int) "
            "SERVER local OPTIONS (task 'object-detection', input_column 'image', "
            "row_per_item 'true')"
        )
        rows = db.execute(
            "SELECT label, score, box_xmin, box_ymin, box_xmax, box_ymax FROM boxes "
            "WHERE image = %s",
            (png(),),
        ).fetchall()
        assert rows == [("cat", 0.97, 5, 6, 50, 60), ("dog", 0.71, 1, 2, 30, 40)]

    def test_top_k_labels_as_rows(self, db: Any, endpoint: Any) -> None:
        endpoint.script(
            "/models/acme/topics",
            Reply(
                [
                    [
                        {"label": "LABEL_2", "score": 0.1},
                        {"label": "LABEL_0", "score": 0.6},
                        {"label": "LABEL_1", "score": 0.3},
                    ]
                ]
            ),
        )
        engine(db, endpoint)
        db.execute(
            "CREATE FOREIGN TABLE topics (text text, label text, score real) "
            "SERVER local OPTIONS (task 'text-classification', model 'acme/topics', "
            'labels \'["sport", "music", "news"]\', parameters \'{"top_k": 3}\', '
            "row_per_item 'true')"
        )
        rows = db.execute(
            "SELECT text, label, round(score::numeric, 2)::float8 FROM topics "
            "WHERE text IN ('guitar', NULL)"
        ).fetchall()
        assert rows == [
            ("guitar", "sport", 0.6),
            ("guitar", "music", 0.3),
            ("guitar", "news", 0.1),
        ]

    def test_speech_chunks_with_timestamps(self, db: Any, endpoint: Any) -> None:
        endpoint.script(
            "/models/openai/whisper-small",
            Reply(
                {
                    "text": "hello world",
                    "chunks": [
                        {"text": "hello", "timestamp": [0.0, 0.5]},
                        {"text": " world", "timestamp": [0.5, 1.1]},
                    ],
                }
            ),
        )
        engine(db, endpoint)
        db.execute(
            "CREATE FOREIGN TABLE words (audio bytea, text text, start real, "
            '"end" real) SERVER local OPTIONS (task '
            "'automatic-speech-recognition', model 'openai/whisper-small', "
            "input_column 'audio', row_per_item 'true')"
        )
        rows = db.execute(
            'SELECT text, start, "end" FROM words WHERE audio = %s', (wav(),)
        ).fetchall()
        assert rows == [("hello", 0.0, 0.5), (" world", 0.5, 1.1)]

    @pytest.mark.parametrize(
        ("definition", "message"),
        [
            (
                "(text text, label text, weight real) OPTIONS (task "
                "'text-classification', row_per_item 'true')",
                "column 'weight' is no field of a text-classification item",
            ),
            (
                "(text text, label int) OPTIONS (task 'text-classification', "
                "row_per_item 'true')",
                "column 'label' has type integer, but the field is a text",
            ),
            (
                "(text text, summary text) OPTIONS (task 'summarization', "
                "row_per_item 'true')",
                "task summarization gives one value, not items",
            ),
        ],
    )
    def test_bad_item_tables_are_refused(
        self, db: Any, endpoint: Any, definition: str, message: str
    ) -> None:
        engine(db, endpoint)
        error = sql_error(
            db,
            "CREATE FOREIGN TABLE bad "
            + definition.replace(" OPTIONS", " SERVER local OPTIONS"),
        )
        assert error.diag.message_primary == message
