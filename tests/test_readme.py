"""The README's SQL, pasted in order, works (against the local server).

Every ```sql block of "Using it" and "Tasks" is run statement by statement,
as a user would paste it, with the local server's spam example standing at
the README's endpoint. A statement whose comment says "refused" must fail;
blocks marked for the hosted API are left out, as nothing here can reach it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "sentence_transformers", reason="the 'local' extra is not installed"
)
psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")

from hf_fdw.local_server import (  # noqa: E402
    default_model_spec,
    running,
    spam_example_spec,
)

README = Path(__file__).resolve().parent.parent / "README.md"
README_ENDPOINT = "http://127.0.0.1:8080"


def readme_statements() -> list[str]:
    """The SQL statements of "Using it" through "Tasks", in order."""
    text = README.read_text()
    section = text[text.index("## Using it") : text.index("## The local inference")]
    statements = []
    for block in re.findall(r"```sql\n(.*?)```", section, flags=re.S):
        if "On the hosted API" in block:
            continue
        current: list[str] = []
        for line in block.splitlines():
            code = line.split("--", 1)[0].rstrip()
            if not current and not code.strip():
                continue  # a comment or blank line between statements
            current.append(line)
            if code.endswith(";"):
                statements.append("\n".join(current))
                current = []
    return statements


@pytest.fixture(scope="module")
def local_server() -> Iterator[Any]:
    with running([default_model_spec(), spam_example_spec()]) as server:
        yield server


@pytest.fixture
def pasted(db: Any) -> Iterator[Any]:
    """The database the README is pasted into; its tables go afterwards."""
    yield db
    db.execute("DROP TABLE IF EXISTS messages")


def test_readme_sql_works_when_pasted(pasted: Any, local_server: Any) -> None:
    db = pasted
    statements = readme_statements()
    assert len(statements) > 25
    cursor = psycopg.ClientCursor(db)
    results: dict[str, list[Any]] = {}
    for statement in statements:
        sql = statement.replace(README_ENDPOINT, local_server.url)
        refused = re.search(r";\s*--[^\n]*\brefused\b", statement)
        if refused:
            with pytest.raises(psycopg.Error):
                cursor.execute(sql)
            continue
        cursor.execute(sql)
        if cursor.description is not None:
            results[statement.split("\n")[0].rstrip(";")] = cursor.fetchall()

    first = (
        "SELECT text, is_spam FROM spam_classifier "
        "WHERE text = 'Subscribe to this channel asap'"
    )
    assert results[first] == [("Subscribe to this channel asap", "spam")]
    joined = (
        "SELECT m.id, s.is_spam FROM messages m "
        "JOIN spam_classifier s ON s.text = m.body"
    )
    assert sorted(results[joined]) == [(1, "ham"), (2, "spam")]
    checked = (
        "SELECT verdict FROM inbox_check WHERE body = 'You won a free cruise, call now'"
    )
    assert results[checked] == [("junk",)]
    whole = (
        "SELECT body, verdict, confidence, answer FROM inbox_check "
        "WHERE body = 'hi there'"
    )
    [(body, verdict, confidence, answer)] = results[whole]
    assert (body, verdict) == ("hi there", "ok")
    assert confidence == pytest.approx(max(item["score"] for item in answer[0]))
