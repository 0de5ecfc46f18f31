"""Predictions through SQL: WHERE, IN, ANY, JOIN, NULLs, every text task.

Each test registers an engine on the scripted endpoint, registers a model,
queries it in a real PostgreSQL with Multicorn2, and checks both the rows and
the requests the endpoint received.
"""

from __future__ import annotations

from typing import Any

import pytest
from fix_pg import sql_error
from fix_http import Reply, spam_classifier

psycopg = pytest.importorskip("psycopg", reason="psycopg (3) is not installed")

SPAM_PATH = "/models/acme/spam-detector"


@pytest.fixture
def spam(db: Any, endpoint: Any) -> Any:
    """The seed's spam classifier: LABEL_0/LABEL_1 renamed to ham/spam."""
    endpoint.respond(SPAM_PATH, spam_classifier)
    db.execute("SELECT hf_fdw.create_engine('local', endpoint => %s)", (endpoint.url,))
    db.execute(
        """SELECT hf_fdw.create_model('spam_classifier', predict => 'is_spam',
               engine => 'local', task => 'text-classification',
               model_name => 'acme/spam-detector', labels => '["ham", "spam"]')"""
    )
    return db


def bodies(endpoint: Any, path: str) -> list[Any]:
    return [request.json for request in endpoint.requests_to(path)]


class TestSpamClassifier:
    """The issue's end-to-end example: WHERE, IN, ANY and a JOIN."""

    def test_one_text(self, spam: Any, endpoint: Any) -> None:
        rows = spam.execute(
            "SELECT text, is_spam FROM spam_classifier "
            "WHERE text = 'Subscribe to this channel asap'"
        ).fetchall()
        assert rows == [("Subscribe to this channel asap", "spam")]
        assert bodies(endpoint, SPAM_PATH) == [
            {"inputs": "Subscribe to this channel asap"}
        ]

    def test_in_list(self, spam: Any, endpoint: Any) -> None:
        rows = spam.execute(
            "SELECT text, is_spam FROM spam_classifier WHERE text IN "
            "('See you at lunch', 'Win a free phone, click now', 'See you at lunch')"
            " ORDER BY text"
        ).fetchall()
        assert rows == [
            ("See you at lunch", "ham"),
            ("Win a free phone, click now", "spam"),
        ]
        assert len(endpoint.requests_to(SPAM_PATH)) == 2

    def test_any_array_and_subselect(self, spam: Any, endpoint: Any) -> None:
        spam.execute("CREATE TEMP TABLE inbox (body text)")
        spam.execute(
            "INSERT INTO inbox VALUES ('free prize, click'), ('minutes attached'),"
            " ('free prize, click')"
        )
        rows = spam.execute(
            "SELECT text, is_spam FROM spam_classifier "
            "WHERE text = ANY(ARRAY(SELECT body FROM inbox)) ORDER BY text"
        ).fetchall()
        assert rows == [("free prize, click", "spam"), ("minutes attached", "ham")]
        rows = spam.execute(
            "SELECT is_spam FROM spam_classifier WHERE text = ANY(%s)",
            (["win a free prize"],),
        ).fetchall()
        assert rows == [("spam",)]

    def test_join_with_native_table(self, spam: Any, endpoint: Any) -> None:
        spam.execute("CREATE TEMP TABLE messages (id int, body text)")
        spam.execute(
            "INSERT INTO messages VALUES (1, 'Lunch at noon?'),"
            " (2, 'Subscribe to this channel asap'), (3, 'Lunch at noon?')"
        )
        rows = spam.execute(
            "SELECT m.id, s.is_spam FROM messages m "
            "JOIN spam_classifier s ON s.text = m.body ORDER BY m.id"
        ).fetchall()
        assert rows == [(1, "ham"), (2, "spam"), (3, "ham")]
        # The repeated message is asked for once.
        assert sorted(b["inputs"] for b in bodies(endpoint, SPAM_PATH)) == [
            "Lunch at noon?",
            "Subscribe to this channel asap",
        ]

    def test_join_plans_a_parameterized_nested_loop(self, spam: Any) -> None:
        spam.execute("CREATE TEMP TABLE messages (body text)")
        plan = "\n".join(
            row[0]
            for row in spam.execute(
                "EXPLAIN SELECT * FROM messages m "
                "JOIN spam_classifier s ON s.text = m.body"
            )
        )
        assert "Nested Loop" in plan
        assert "Foreign Scan on spam_classifier" in plan

    def test_join_of_1000_rows_with_10_texts_sends_10_requests(
        self, spam: Any, endpoint: Any
    ) -> None:
        """Case C11."""
        spam.execute(
            "CREATE TEMP TABLE big AS SELECT 'message ' || (i % 10) AS body"
            " FROM generate_series(1, 1000) i"
        )
        spam.execute("ANALYZE big")
        count = spam.execute(
            "SELECT count(*), count(DISTINCT s.text) FROM big b "
            "JOIN spam_classifier s ON s.text = b.body"
        ).fetchone()
        assert count == (1000, 10)
        assert len(endpoint.requests_to(SPAM_PATH)) == 10

    def test_prepared_statement(self, spam: Any) -> None:
        spam.execute(
            "PREPARE spam_check(text) AS "
            "SELECT is_spam FROM spam_classifier WHERE text = $1"
        )
        for _ in range(7):  # past the generic plan switch
            assert spam.execute(
                "EXECUTE spam_check('win a free prize')"
            ).fetchone() == ("spam",)
        assert spam.execute("EXECUTE spam_check('hi')").fetchone() == ("ham",)


class TestInputs:
    """What the WHERE clause must and must not send."""

    def test_null_input_gives_null_and_no_request(
        self, spam: Any, endpoint: Any
    ) -> None:
        """Case C9."""
        rows = spam.execute(
            "SELECT text, is_spam FROM spam_classifier WHERE text IS NULL"
        ).fetchall()
        assert rows == [(None, None)]
        rows = spam.execute(
            "SELECT text, is_spam FROM spam_classifier WHERE text IN ('hi', NULL)"
        ).fetchall()
        assert rows == [("hi", "ham")]
        spam.execute("CREATE TEMP TABLE m (body text)")
        spam.execute("INSERT INTO m VALUES (NULL), ('hello')")
        rows = spam.execute(
            "SELECT m.body, s.is_spam FROM m LEFT JOIN spam_classifier s "
            "ON s.text = m.body ORDER BY 1"
        ).fetchall()
        assert rows == [("hello", "ham"), (None, None)]
        assert sorted(b["inputs"] for b in bodies(endpoint, SPAM_PATH)) == [
            "hello",
            "hi",
        ]

    def test_or_is_a_clear_error_and_sends_nothing(
        self, spam: Any, endpoint: Any
    ) -> None:
        """Case C10."""
        error = sql_error(
            spam, "SELECT * FROM spam_classifier WHERE text = 'a' OR text = 'b'"
        )
        assert 'must give the input column "text"' in error.diag.message_primary
        assert "IN (...)" in error.diag.message_hint
        error = sql_error(spam, "SELECT * FROM spam_classifier")
        assert 'input column "text"' in error.diag.message_primary
        assert endpoint.requests == []
        # The same session goes on working.
        assert spam.execute(
            "SELECT is_spam FROM spam_classifier WHERE text IN ('a', 'b')"
        ).fetchall() == [("ham",), ("ham",)]

    @pytest.mark.parametrize(
        "text",
        [
            "trailing spaces   ",
            "\ttabbed\ttext\t",
            "emoji 🎉🔥 win",
            "combining accents: e\u0301te\u0301",
            "précomposé: été",
            "quote ' and backslash \\ and newline\n",
        ],
    )
    def test_row_echoes_its_input_exactly(
        self, spam: Any, endpoint: Any, text: str
    ) -> None:
        """Case C17: PostgreSQL re-checks the qual, so the echo must be exact."""
        rows = spam.execute(
            "SELECT text, is_spam FROM spam_classifier WHERE text = %s", (text,)
        ).fetchall()
        assert len(rows) == 1 and rows[0][0] == text
        assert bodies(endpoint, SPAM_PATH) == [{"inputs": text}]

    def test_filter_on_prediction_keeps_matching_rows(self, spam: Any) -> None:
        rows = spam.execute(
            "SELECT text FROM spam_classifier "
            "WHERE text IN ('win free now', 'hi there')"
            " AND is_spam = 'spam'"
        ).fetchall()
        assert rows == [("win free now",)]


def register(db: Any, server: Any, **arguments: Any) -> None:
    """create_engine on the scripted endpoint, then create_model(**arguments)."""
    db.execute("SELECT hf_fdw.create_engine('local', endpoint => %s)", (server.url,))
    names = ", ".join(f"{name} => %({name})s" for name in arguments)
    db.execute(f"SELECT hf_fdw.create_model({names})", arguments)


class TestTasks:
    """Each text task: the body sent and the value in the target column."""

    def test_text_classification_default_model_with_labels(
        self, db: Any, endpoint: Any
    ) -> None:
        """Case C1: task only, labels rename the default model's classes."""
        path = "/models/distilbert/distilbert-base-uncased-finetuned-sst-2-english"
        endpoint.script(
            path,
            Reply(
                [
                    [
                        {"label": "POSITIVE", "score": 0.9999},
                        {"label": "NEGATIVE", "score": 0.0001},
                    ]
                ]
            ),
        )
        register(
            db,
            endpoint,
            name="sentiment",
            predict="mood",
            engine="local",
            task="text-classification",
            labels='["unhappy", "happy"]',
        )
        row = db.execute(
            "SELECT mood FROM sentiment WHERE text = 'I like you. I love you'"
        ).fetchone()
        assert row == ("happy",)
        assert bodies(endpoint, path) == [{"inputs": "I like you. I love you"}]

    def test_positional_labels_on_unknown_classes_is_a_clear_error(
        self, db: Any, endpoint: Any
    ) -> None:
        """Case C2: a clear error naming the fix, and object labels work."""
        path = "/models/acme/moods"
        endpoint.script(
            path,
            Reply([{"label": "joy", "score": 0.8}, {"label": "anger", "score": 0.2}]),
        )
        register(
            db,
            endpoint,
            name="moods",
            predict="mood",
            engine="local",
            task="text-classification",
            model_name="acme/moods",
            labels='["a", "b"]',
        )
        error = sql_error(db, "SELECT mood FROM moods WHERE text = 'yay'")
        assert "cannot rename class 'joy' by position" in error.diag.message_primary
        assert "object" in error.diag.message_hint
        db.execute("SELECT hf_fdw.drop_model('moods')")
        db.execute(
            """SELECT hf_fdw.create_model('moods', 'mood', 'local',
                   task => 'text-classification', model_name => 'acme/moods',
                   labels => '{"joy": "glad", "anger": "cross"}')"""
        )
        assert db.execute("SELECT mood FROM moods WHERE text = 'yay'").fetchone() == (
            "glad",
        )

    def test_flat_answer_and_top_k(self, db: Any, endpoint: Any) -> None:
        """Case C5: flat answers read too, and top_k reaches the body."""
        path = "/models/acme/topics"
        endpoint.script(
            path,
            Reply(
                [
                    {"label": "sport", "score": 0.2},
                    {"label": "music", "score": 0.7},
                    {"label": "news", "score": 0.1},
                ]
            ),
        )
        register(
            db,
            endpoint,
            name="topics",
            predict="topic",
            engine="local",
            task="text-classification",
            model_name="acme/topics",
            parameters='{"top_k": 3}',
        )
        assert db.execute(
            "SELECT topic FROM topics WHERE text = 'guitar solo'"
        ).fetchone() == ("music",)
        assert bodies(endpoint, path) == [
            {"inputs": "guitar solo", "parameters": {"top_k": 3}}
        ]

    @pytest.mark.parametrize(
        "answer",
        [
            [
                {"label": "refund", "score": 0.91},
                {"label": "faq", "score": 0.06},
                {"label": "legal", "score": 0.03},
            ],
            {
                "sequence": "x",
                "labels": ["refund", "faq", "legal"],
                "scores": [0.91, 0.06, 0.03],
            },
            [
                {"label": "faq", "score": 0.06},
                {"label": "refund", "score": 0.91},
                {"label": "legal", "score": 0.03},
            ],
        ],
        ids=["new-list", "old-object", "unsorted"],
    )
    def test_zero_shot(self, db: Any, endpoint: Any, answer: Any) -> None:
        """Cases C3 and C4: candidate_labels alone work; both shapes read."""
        path = "/models/facebook/bart-large-mnli"
        endpoint.script(path, Reply(answer))
        register(
            db,
            endpoint,
            name="router",
            predict="queue",
            engine="local",
            task="zero-shot-classification",
            candidate_labels=["refund", "legal", "faq"],
        )
        text = "I was charged twice, please give my money back"
        assert db.execute(
            "SELECT queue FROM router WHERE text = %s", (text,)
        ).fetchone() == ("refund",)
        assert bodies(endpoint, path) == [
            {
                "inputs": text,
                "parameters": {"candidate_labels": ["refund", "legal", "faq"]},
            }
        ]

    def test_sentence_similarity(self, db: Any, endpoint: Any) -> None:
        """Case C6: inputs nested under "inputs", a float in the row."""
        path = (
            "/models/sentence-transformers/all-MiniLM-L6-v2"
            "/pipeline/sentence-similarity"
        )
        endpoint.script(path, Reply([0.6946]))
        register(
            db,
            endpoint,
            name="likeness",
            predict="similarity",
            engine="local",
            task="sentence-similarity",
            input_column="a",
            input_column2="b",
        )
        row = db.execute(
            "SELECT a, b, similarity FROM likeness "
            "WHERE a = 'That is a happy person' AND b = 'That is a happy dog'"
        ).fetchone()
        assert row == ("That is a happy person", "That is a happy dog", 0.6946)
        assert bodies(endpoint, path) == [
            {
                "inputs": {
                    "source_sentence": "That is a happy person",
                    "sentences": ["That is a happy dog"],
                }
            }
        ]

    def test_question_answering(self, db: Any, endpoint: Any) -> None:
        path = "/models/deepset/roberta-base-squad2"
        endpoint.script(
            path, Reply({"answer": "Clara", "score": 0.93, "start": 11, "end": 16})
        )
        register(
            db,
            endpoint,
            name="qa",
            predict="answer",
            engine="local",
            task="question-answering",
            input_column="question",
            context_column="context",
        )
        row = db.execute(
            "SELECT answer FROM qa WHERE question = 'What''s my name?' "
            "AND context = 'My name is Clara and I live in Berkeley'"
        ).fetchone()
        assert row == ("Clara",)
        assert bodies(endpoint, path) == [
            {
                "inputs": {
                    "question": "What's my name?",
                    "context": "My name is Clara and I live in Berkeley",
                }
            }
        ]

    def test_summarization_translation_fill_mask(self, db: Any, endpoint: Any) -> None:
        endpoint.script(
            "/models/facebook/bart-large-cnn",
            Reply([{"summary_text": "A short summary."}]),
        )
        endpoint.script(
            "/models/google-t5/t5-small",
            Reply([{"translation_text": "Bonjour le monde"}]),
        )
        endpoint.script(
            "/models/google-bert/bert-base-uncased",
            Reply(
                [
                    {
                        "sequence": "paris is the capital of france.",
                        "score": 0.41,
                        "token": 3000,
                        "token_str": "paris",
                    },
                    {
                        "sequence": "lyon is the capital of france.",
                        "score": 0.05,
                        "token": 3001,
                        "token_str": "lyon",
                    },
                ]
            ),
        )
        register(
            db,
            endpoint,
            name="summary",
            predict="summary",
            engine="local",
            task="summarization",
            parameters='{"max_length": 40}',
        )
        db.execute(
            "SELECT hf_fdw.create_model('fr', 'french', 'local', task => 'translation')"
        )
        db.execute(
            "SELECT hf_fdw.create_model('masks', 'filled', 'local', "
            "task => 'fill-mask')"
        )
        assert db.execute(
            "SELECT summary FROM summary WHERE text = 'A long article.'"
        ).fetchone() == ("A short summary.",)
        assert db.execute(
            "SELECT french FROM fr WHERE text = 'Hello world'"
        ).fetchone() == ("Bonjour le monde",)
        assert db.execute(
            "SELECT filled FROM masks WHERE text = '[MASK] is the capital of France.'"
        ).fetchone() == ("paris is the capital of france.",)
        assert bodies(endpoint, "/models/facebook/bart-large-cnn") == [
            {"inputs": "A long article.", "parameters": {"max_length": 40}}
        ]

    def test_text_generation_sends_one_string(self, db: Any, endpoint: Any) -> None:
        """Case C18: a TGI-style endpoint gets a string, never a list."""
        path = "/generate"
        endpoint.script(path, Reply({"generated_text": "Once upon a time, a cat."}))
        register(
            db,
            endpoint,
            name="writer",
            predict="story",
            engine="local",
            task="text-generation",
            endpoint=endpoint.url + path,
            parameters='{"max_new_tokens": 20}',
        )
        rows = db.execute(
            "SELECT text, story FROM writer WHERE text IN ('Once upon', 'Twice')"
            " ORDER BY text"
        ).fetchall()
        assert rows == [
            ("Once upon", "Once upon a time, a cat."),
            ("Twice", "Once upon a time, a cat."),
        ]
        sent = sorted(bodies(endpoint, path), key=lambda b: b["inputs"])
        assert sent == [
            {"inputs": "Once upon", "parameters": {"max_new_tokens": 20}},
            {"inputs": "Twice", "parameters": {"max_new_tokens": 20}},
        ]

    def test_feature_extraction_gives_an_array(self, db: Any, endpoint: Any) -> None:
        path = (
            "/models/sentence-transformers/all-MiniLM-L6-v2/pipeline/feature-extraction"
        )
        endpoint.script(path, Reply([[0.25, -0.5, 1.0]]))
        register(
            db,
            endpoint,
            name="embed",
            predict="embedding",
            engine="local",
            task="feature-extraction",
            parameters='{"normalize": true}',
        )
        row = db.execute(
            "SELECT embedding, pg_typeof(embedding)::text FROM embed WHERE text = 'x'"
        ).fetchone()
        assert row == ([0.25, -0.5, 1.0], "double precision[]")
        assert bodies(endpoint, path) == [{"inputs": "x", "normalize": True}]

    def test_options_reach_the_body(self, spam: Any, endpoint: Any) -> None:
        spam.execute(
            """SELECT hf_fdw.create_model('spam2', 'is_spam', 'local',
                   task => 'text-classification', model_name => 'acme/spam-detector',
                   options => '{"wait_for_model": true}',
                   parameters => '{"function_to_apply": "sigmoid"}')"""
        )
        spam.execute("SELECT is_spam FROM spam2 WHERE text = 'hey'").fetchall()
        assert bodies(endpoint, SPAM_PATH) == [
            {
                "inputs": "hey",
                "parameters": {"function_to_apply": "sigmoid"},
                "options": {"wait_for_model": True},
            }
        ]


class TestEndpoints:
    """Where requests go, and what a failing endpoint looks like in SQL."""

    def test_model_endpoint_is_called_verbatim(self, db: Any, endpoint: Any) -> None:
        """Case C7."""
        endpoint.script("/some/path", Reply([{"label": "LABEL_1", "score": 0.9}]))
        register(
            db,
            endpoint,
            name="dedicated",
            predict="label",
            engine="local",
            task="text-classification",
            endpoint=endpoint.url + "/some/path",
        )
        assert db.execute(
            "SELECT label FROM dedicated WHERE text = 'x'"
        ).fetchone() == ("LABEL_1",)
        assert [r.path for r in endpoint.requests] == ["/some/path"]

    def test_error_inside_a_200_answer(self, spam: Any, endpoint: Any) -> None:
        """Case C12."""
        endpoint.script(SPAM_PATH, Reply({"error": "Input is too long for model"}))
        endpoint.respond(SPAM_PATH, lambda body: Reply({"error": "Input is too long"}))
        error = sql_error(spam, "SELECT * FROM spam_classifier WHERE text = 'x'")
        assert error.diag.message_primary == (
            "the inference endpoint answered with an error"
        )
        assert error.diag.message_detail == "Input is too long"

    def test_http_error_has_server_words_and_hint(
        self, spam: Any, endpoint: Any
    ) -> None:
        endpoint.respond(
            SPAM_PATH, lambda body: Reply({"error": "Model is gated"}, status=403)
        )
        error = sql_error(spam, "SELECT * FROM spam_classifier WHERE text = 'x'")
        assert "answered HTTP 403" in error.diag.message_primary
        assert error.diag.message_detail == "Model is gated"

    def test_unknown_model_404_hint(self, db: Any, endpoint: Any) -> None:
        register(
            db,
            endpoint,
            name="missing",
            predict="label",
            engine="local",
            task="text-classification",
            model_name="acme/nothing-here",
        )
        error = sql_error(db, "SELECT * FROM missing WHERE text = 'x'")
        assert "answered HTTP 404" in error.diag.message_primary
        assert error.diag.message_detail == "Model acme/nothing-here does not exist"
        assert "endpoint =>" in error.diag.message_hint

    def test_hosted_router_without_key_fails_before_any_request(self, db: Any) -> None:
        db.execute("SELECT hf_fdw.create_engine('hosted')")
        db.execute(
            "SELECT hf_fdw.create_model('cloud', 'label', 'hosted', "
            "task => 'text-classification')"
        )
        error = sql_error(db, "SELECT * FROM cloud WHERE text = 'x'")
        assert "has no API key" in error.diag.message_primary
        assert "hf_fdw.set_api_key('hosted'" in error.diag.message_hint


def test_chat_completion_on_the_chat_route(db: Any, endpoint: Any) -> None:
    """A chat-only model, through the router's OpenAI-style route."""
    endpoint.respond(
        "/v1/chat/completions",
        lambda body: Reply(
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": f"You said: {body['messages'][0]['content']}",
                        },
                    }
                ]
            }
        ),
    )
    db.execute(
        "SELECT hf_fdw.create_engine('local', endpoint => %s)",
        (endpoint.url + "/hf-inference",),
    )
    db.execute(
        "SELECT hf_fdw.create_model('chat', 'reply', 'local', "
        "task => 'chat-completion', model_name => 'acme/chat:fastest', "
        "parameters => '{\"max_tokens\": 50}')"
    )
    assert db.execute("SELECT reply FROM chat WHERE text = 'hello'").fetchone() == (
        "You said: hello",
    )
    described = dict(db.execute("SELECT * FROM hf_fdw.describe_model('chat')"))
    assert described["endpoint"] == endpoint.url + "/v1/chat/completions"
    assert bodies(endpoint, "/v1/chat/completions") == [
        {
            "model": "acme/chat:fastest",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 50,
            "stream": False,
        }
    ]
