"""API keys to tenants, read from a file mounted from a Kubernetes Secret.

One implementation for every service that checks keys: the router (tenants' keys on its
front door) and the retriever (the router's, the operator's and the CLI's keys).

The file is a YAML mapping `key: tenant`. Secrets mounted as volumes are updated in
place (an atomic symlink swap), so the file is re-read when its identity or mtime
changes; a broken file keeps the last good table rather than locking everyone out.
The table holds SHA-256 digests of the keys (a dict lookup on a digest does not leak
the key through timing); keys are never logged. Hashing every request's key cost about
1.4% of the router's CPU, so the digests of keys that matched are memoised (bounded;
unknown keys are never memoised, so guessing cannot fill it), and the table is still
consulted by digest on every request: a key removed from the file stops working at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from gearshift.runtime.errors import Unauthenticated

log = logging.getLogger(__name__)

BEARER = "bearer "
MEMO_SIZE = 4096


class KeyTable:
    """Resolves an API key to its tenant, reloading the keys file when it changes."""

    def __init__(self, path: str, check_interval_s: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self.check_interval_s = check_interval_s
        self._keys: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._memo: dict[str, str] = {}
        self.reload(force=True)

    @property
    def size(self) -> int:
        return len(self._keys)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)  # follows the Secret volume's symlinks
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self, force: bool = False) -> None:
        """Re-reads the keys file if it changed (or always, with `force`)."""
        if self.path is None:
            return
        stamp = self._file_stamp()
        if not force and stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            log.warning("api keys file %s is missing; keeping %d keys", self.path, self.size)
            return
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError("expected a mapping of key to tenant")
            keys = {_digest(str(k)): str(v) for k, v in data.items() if k and v}
        except (OSError, ValueError, yaml.YAMLError) as exc:
            log.error(
                "api keys file %s is invalid (%s); keeping %d keys", self.path, exc, self.size
            )
            return
        self._keys = keys
        self._memo = {}
        log.info("loaded %d api keys", len(keys))

    def tenant_for(self, key: str) -> str | None:
        """The key's tenant, or None when the key is unknown."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            self.reload()
        digest = self._memo.get(key)
        if digest is None:
            digest = _digest(key)
            if digest in self._keys and len(self._memo) < MEMO_SIZE:
                self._memo[key] = digest
        return self._keys.get(digest)

    def authenticate(self, authorization: str | None) -> str:
        """Tenant for an `authorization: Bearer <key>` value; raises Unauthenticated."""
        if not authorization or not authorization.lower().startswith(BEARER):
            raise Unauthenticated("missing API key: send `authorization: Bearer <key>`")
        key = authorization[len(BEARER) :].strip()
        tenant = self.tenant_for(key) if key else None
        if tenant is None:
            raise Unauthenticated("unknown API key", reason="UNKNOWN_API_KEY")
        return tenant


def bearer_of(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The call's `authorization` metadata value (None when absent)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def bearer_metadata(key: str) -> tuple[tuple[str, str], ...]:
    """Call metadata presenting `key` (none when the key is empty)."""
    return (("authorization", f"Bearer {key}"),) if key else ()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
