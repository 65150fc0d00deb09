"""Where entries live: in-process (usearch + SQLite) or shared (PostgreSQL + pgvector)."""

from gearshift.cache.backends.base import Backend, BackendError

__all__ = ["Backend", "BackendError"]
