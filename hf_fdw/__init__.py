"""Hugging Face inference models as PostgreSQL foreign tables.

Multicorn imports ``hf_fdw.HuggingFaceFDW`` inside the server. The class is
loaded lazily so that the plain core (options, tasks, HTTP) imports anywhere,
with or without Multicorn.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["BackendStateFDW", "HuggingFaceFDW", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("HuggingFaceFDW", "BackendStateFDW"):
        from hf_fdw import fdw

        return getattr(fdw, name)
    raise AttributeError(f"module 'hf_fdw' has no attribute {name!r}")
