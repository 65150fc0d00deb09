"""A small evaluator of Kubernetes NetworkPolicy ingress rules, for the chart tests.

It follows the API's semantics: a pod no policy selects (for Ingress) accepts all
traffic; a selected pod accepts a connection when any selecting policy has a rule whose
ports include the port (or lists none) and whose peers include the source (or lists
none). A peer with only `podSelector` means pods of the policy's own namespace; with only
`namespaceSelector`, every pod of the matching namespaces; with both, the intersection.
Only `matchLabels` selectors are used by the chart, so only those are supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    unsupported = set(selector) - {"matchLabels"}
    assert not unsupported, f"evaluator does not support {unsupported}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_admits(peer: dict[str, Any], policy_ns: str, source: Pod) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not evaluated"
    pod_sel = peer.get("podSelector")
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is None:
        ns_ok = source.namespace == policy_ns
    else:
        ns_ok = _selects(ns_sel, source.namespace_labels)
    pod_ok = True if pod_sel is None else _selects(pod_sel, source.labels)
    return ns_ok and pod_ok


def allowed(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    """Whether `source` may open a TCP connection to `target` on `port`."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(
                p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports
            ):
                continue
            peers = rule.get("from")
            if not peers or any(
                _peer_admits(peer, policy["metadata"]["namespace"], source) for peer in peers
            ):
                return True
    return False
