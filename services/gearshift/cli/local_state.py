"""The local mesh's state folder ($GEARSHIFT_HOME, default ~/.gearshift).

`gearshift up` keeps its generated configuration, the local API key, the cache's
data and the services' logs here, so a second `up` reuses them and
`gearshift chat` finds the router and the key without flags.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULT_ROUTER_ADDRESS = "127.0.0.1:50051"
KEYS_FILE = "api-keys.yaml"
LOCAL_TENANT = "local"


def home() -> Path:
    return Path(os.environ.get("GEARSHIFT_HOME", Path.home() / ".gearshift"))


def router_address() -> str:
    return os.environ.get("GEARSHIFT_ROUTER_ADDRESS", DEFAULT_ROUTER_ADDRESS)


def local_api_key(create: bool = False) -> str:
    """The local key from the keys file (created with a random key on first `up`)."""
    path = home() / KEYS_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            key, _, tenant = line.partition(":")
            if tenant.strip() == LOCAL_TENANT:
                return key.strip().strip('"')
    if not create:
        return ""
    key = "gs-local-" + secrets.token_hex(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'"{key}": {LOCAL_TENANT}\n')
    path.chmod(0o600)
    return key
