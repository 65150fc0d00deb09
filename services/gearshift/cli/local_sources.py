"""The local mesh's own data source: Gearshift's docs/ folder as `gearshift-docs`.

`gearshift up` starts a retriever, ingests docs/ into it (unchanged files are
no-ops, so a second `up` costs a few reads) and declares the source to the router
with a DataSource document in the local routes file, the same shape a cluster uses.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gearshift.cli.sources import FileResult, ingest_paths

DOCS_SOURCE = "gearshift-docs"
DOCS_DESCRIPTION = (
    "Gearshift's own documentation: how to install, configure and operate the router, "
    "cache, SLM server, proxy, operator and Helm chart"
)
DOCS_EXAMPLES = [
    "How do I set the cache's maximum false-hit rate?",
    "Which Helm values configure the router?",
    "How does the operator scale a ModelRoute?",
]
DOCS_EXCLUDES = ["Why is the sky blue?", "Write me a poem about the sea"]


def docs_folder() -> Path | None:
    """The project's docs/ folder in a source checkout (None in an installed wheel)."""
    import gearshift

    folder = Path(gearshift.__file__).resolve().parents[2] / "docs"
    return folder if folder.is_dir() else None


def datasource_document(endpoint: str) -> dict[str, Any]:
    """The DataSource for gearshift-docs, as the router reads it from the routes file."""
    return {
        "apiVersion": "gearshift.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": DOCS_SOURCE, "namespace": "default"},
        "spec": {
            "description": DOCS_DESCRIPTION,
            "examples": DOCS_EXAMPLES,
            "excludes": DOCS_EXCLUDES,
            "kind": "hybrid",
            "retriever": {"endpoint": endpoint, "tenant": ""},
            "search": {"topK": 5},
        },
    }


def ingest_docs(address: str, folder: Path) -> list[FileResult]:
    """Ingests docs/ into gearshift-docs; the results per file."""
    results, _ = asyncio.run(ingest_paths(address, DOCS_SOURCE, [folder], timeout_s=900.0))
    return results
