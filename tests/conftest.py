"""Fixtures shared by the test modules: see fix_pg.py and fix_http.py."""

from collections.abc import Iterator

import pytest
from fix_http import _scripted_server, endpoint  # noqa: F401
from fix_pg import db, postgres  # noqa: F401

from hf_fdw import cache


@pytest.fixture(autouse=True)
def _empty_answer_cache() -> Iterator[None]:
    """Each test starts with the in-process answer cache empty."""
    cache.shared.clear()
    yield
    cache.shared.clear()
