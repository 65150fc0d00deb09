"""Upstream API keys: read from a mounted file or an env var, and kept out of every output.

Keys are loaded lazily and the file is re-read when its mtime changes, so a rotated
Kubernetes Secret takes effect without a restart. Every key ever loaded is registered
with `REDACTOR`; text that leaves the proxy (error messages, upstream response excerpts,
log records through `RedactingFilter`) passes through it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

REDACTED = "[REDACTED]"
_MIN_SECRET_LEN = 4  # shorter "keys" would redact ordinary words


class Redactor:
    """Replaces every known secret in a text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if len(secret) >= _MIN_SECRET_LEN:
            with self._lock:
                self._secrets.add(secret)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Scrubs known keys out of a log record's final message (belt and braces)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = REDACTOR.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class MissingKey(RuntimeError):
    """The configured key source is absent or empty (the message names the source, not a key)."""


class KeySource:
    """Where one upstream's key comes from; `get()` returns it (or "" for no auth)."""

    def __init__(self, file: str = "", env: str = "") -> None:
        self._file = Path(file) if file else None
        self._env = env
        self._cached = ""
        self._mtime: float | None = None

    def describe(self) -> str:
        if self._file is not None:
            return f"file {self._file}"
        if self._env:
            return f"env var {self._env}"
        return "none"

    def get(self) -> str:
        if self._file is not None:
            return self._from_file(self._file)
        if self._env:
            value = os.environ.get(self._env, "").strip()
            if not value:
                raise MissingKey(f"API key env var {self._env} is unset or empty")
            REDACTOR.add(value)
            return value
        return ""

    def _from_file(self, path: Path) -> str:
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise MissingKey(f"API key file {path} cannot be read: {exc.strerror}") from None
        if mtime != self._mtime:
            value = path.read_text().strip()
            if not value:
                raise MissingKey(f"API key file {path} is empty")
            REDACTOR.add(value)
            self._cached, self._mtime = value, mtime
        return self._cached

    def __repr__(self) -> str:  # never show the value
        return f"KeySource({self.describe()})"
