"""A typed model of the `DataSource` custom resource (gearshift.dev/v1alpha1).

A data source is a retriever collection the router can answer from: its metadata
(description, examples, excludes) competes with the model routes' in selection, and its
`retriever` block says where the passages come from. The router reads DataSources like
ModelRoutes: from the cluster (watch) or from the local routes file, where DataSource
documents sit beside ModelRoute documents. Validation mirrors the CRD's schema
(`helm/gearshift/files/crds/datasource.yaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gearshift.routes.model_route import (
    API_VERSION,
    GROUP,
    MAX_DESCRIPTION,
    Condition,
    ObjectMeta,
    OptionMetadata,
    _Model,
    documents,
)

KIND = "DataSource"
PLURAL = "datasources"
DEFAULT_TENANT = "default"

SearchMode = Literal["hybrid", "vector", "keyword"]


class RetrieverRef(_Model):
    """Where the source's documents are searched."""

    endpoint: str = Field(
        "", description="host:port of a RetrieverService; empty: the chart's retriever Service."
    )
    tenant: str = Field(
        "", description="Retriever tenant the documents live under; empty means 'default'."
    )


class SearchSettings(_Model):
    """How many passages a search returns."""

    top_k: int = Field(5, ge=1, le=20, description="Passages retrieved per question.")


class DataSourceSpec(OptionMetadata):
    """What the source answers and where its documents are searched."""

    description: str = Field(
        ...,
        min_length=1,
        max_length=MAX_DESCRIPTION,
        description="One line: what questions this source answers (required).",
    )
    kind: SearchMode = Field("hybrid", description="Search mode: hybrid, vector or keyword.")
    retriever: RetrieverRef = Field(default_factory=lambda: RetrieverRef.model_validate({}))
    search: SearchSettings = Field(default_factory=lambda: SearchSettings.model_validate({}))


class DataSourceStatus(_Model):
    """What the operator last observed (written only by the operator)."""

    endpoint: str = ""
    documents: int = 0
    chunks: int = 0
    content_version: str = ""
    last_ingested_at: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


class DataSource(_Model):
    """One `DataSource` object: metadata, spec and (from a cluster) status."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: DataSourceSpec
    status: DataSourceStatus | None = None

    @model_validator(mode="after")
    def _kind(self) -> DataSource:
        if self.kind != KIND or self.api_version.split("/")[0] != GROUP:
            raise ValueError(f"expected {API_VERSION} {KIND}, got {self.api_version} {self.kind}")
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def endpoint(self) -> str:
        """spec.retriever.endpoint, else the operator's resolved status.endpoint, else ''."""
        if self.spec.retriever.endpoint:
            return self.spec.retriever.endpoint
        return self.status.endpoint if self.status is not None else ""

    @property
    def tenant(self) -> str:
        return self.spec.retriever.tenant or DEFAULT_TENANT


def load_sources(text: str) -> list[DataSource]:
    """The DataSource documents of a routes YAML text (ModelRoutes in it are skipped)."""
    sources = [DataSource.model_validate(dict(o)) for o in documents(text) if o.get("kind") == KIND]
    names = [(s.metadata.namespace, s.name) for s in sources]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate data sources: {sorted(duplicates)}")
    return sources


def load_sources_file(path: str | Path) -> list[DataSource]:
    """Reads the DataSources of a local routes file."""
    return load_sources(Path(path).read_text(encoding="utf-8"))
