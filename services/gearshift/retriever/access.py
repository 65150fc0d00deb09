"""Who may read and write which tenant's sources, from the caller's API key.

The retriever checks keys with the same table the router uses (`KeyTable`: a YAML file
`key: tenant`, mounted from a Secret and reloaded on change). A key whose tenant is `*`
is a service key (the router's and the operator's): it may name any tenant in its
requests. Any other key is bound to its tenant: a request that leaves `tenant` empty
acts on the key's tenant, and one that names another tenant is PERMISSION_DENIED. With
no keys file the retriever checks nothing and the tenant is the request's, as inside a
cluster where only the router and the operator can reach it (its NetworkPolicy).
"""

from __future__ import annotations

from typing import Any

import grpc

from gearshift.runtime.api_keys import KeyTable, bearer_of
from gearshift.runtime.errors import PermissionDenied

ANY_TENANT = "*"
DEFAULT_TENANT = "default"


class Access:
    """Authenticates calls and resolves the tenant each one acts on."""

    def __init__(self, keys: KeyTable | None) -> None:
        self.keys = keys

    def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The key's tenant (None when keys are not checked); raises Unauthenticated."""
        if self.keys is None:
            return None
        return self.keys.authenticate(bearer_of(context))

    def tenant(self, caller: str | None, requested: str) -> str:
        """The tenant a request acts on, given its caller's tenant."""
        named = requested.strip()
        if caller is None or caller == ANY_TENANT:
            return named or DEFAULT_TENANT
        if named and named != caller:
            raise PermissionDenied(
                f"this API key belongs to tenant {caller!r} and cannot act on tenant "
                f"{named!r}; leave tenant empty or use a key of that tenant",
                reason="TENANT_NOT_ALLOWED",
            )
        return caller
