"""Fixtures shared by the test modules: see fix_pg.py and fix_http.py."""

from fix_http import _scripted_server, endpoint  # noqa: F401
from fix_pg import db, postgres  # noqa: F401
