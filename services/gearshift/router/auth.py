"""The router's API-key table: the shared one in `gearshift.runtime.api_keys`."""

from gearshift.runtime.api_keys import KeyTable, bearer_of

__all__ = ["KeyTable", "bearer_of"]
