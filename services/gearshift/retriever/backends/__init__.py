"""Where sources live: embedded (usearch + SQLite FTS5) or shared (PostgreSQL + pgvector)."""

from gearshift.retriever.backends.base import Backend, BackendError

__all__ = ["Backend", "BackendError"]
