"""The RetrieverService handlers: validation and mapping between protos and the core.

Errors of one document (empty, oversized, binary) are reported in its result and
the stream goes on; errors of the request itself (no source, mixed sources, bad
arguments) are INVALID_ARGUMENT, an unknown source is NOT_FOUND and a backend
outage is UNAVAILABLE. With a keys file, a call without a known key is UNAUTHENTICATED
and one naming another tenant than its key's is PERMISSION_DENIED (`access.py`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gearshift.embeddings.validation import caller_embedding
from gearshift.retriever.access import Access
from gearshift.retriever.core import MODES, DocumentIn, IngestOutcome, Retriever
from gearshift.retriever.records import Hit, public_version
from gearshift.runtime.errors import FieldViolation, InvalidArgument, grpc_errors
from gearshift.v1 import retriever_pb2, retriever_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_TOP_K = 5
MAX_TOP_K = 100
MAX_DOCUMENT_ID_CHARS = 1024
_SOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _require_source(value: str, field: str = "source") -> str:
    if not value:
        raise InvalidArgument([FieldViolation(field, "required: the source's name")])
    if not _SOURCE_NAME.match(value):
        raise InvalidArgument(
            [
                FieldViolation(
                    field,
                    f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
                    "1 to 63 characters, starting and ending with a letter or digit)",
                )
            ]
        )
    return value


def _passage(source: str, hit: Hit) -> retriever_pb2.Passage:
    return retriever_pb2.Passage(
        source=source,
        document_id=hit.document_id,
        document_title=hit.document_title,
        chunk_title=hit.chunk_title,
        chunk_index=hit.chunk_index,
        text=hit.text,
        score=hit.score,
        vector_similarity=hit.vector_similarity,
        metadata=hit.metadata,
    )


def _result(outcome: IngestOutcome) -> retriever_pb2.IngestResult:
    return retriever_pb2.IngestResult(
        document_id=outcome.document_id,
        status=outcome.status,
        chunks=outcome.chunks,
        error=outcome.error,
    )


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):
    """Implements the RetrieverService contract over a `Retriever`."""

    def __init__(self, retriever: Retriever, access: Access | None = None) -> None:
        self.retriever = retriever
        self.access = access or Access(None)

    def _tenant(self, context: Context, requested: str) -> str:
        return self.access.tenant(self.access.caller(context), requested)

    @grpc_errors
    async def Ingest(
        self, request_iterator: AsyncIterator[retriever_pb2.IngestDocument], context: Context
    ) -> retriever_pb2.IngestResponse:
        limit = self.retriever.settings.max_documents_per_stream
        caller = self.access.caller(context)  # before reading any document
        tenant = source = ""
        results: list[retriever_pb2.IngestResult] = []
        position = 0
        async for document in request_iterator:
            if not source:
                tenant = self.access.tenant(caller, document.tenant)
                source = _require_source(document.source, f"documents[{position}].source")
                await self.retriever.ensure_source(tenant, source)
            elif document.source != source or self.access.tenant(caller, document.tenant) != tenant:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            f"documents[{position}].source",
                            f"one stream ingests into one source: {document.source!r} after "
                            f"{source!r} (tenant {tenant!r}); the documents before it were "
                            "ingested",
                        )
                    ]
                )
            position += 1
            results.append(_result(await self._ingest(tenant, source, document, position, limit)))
        if not source:
            raise InvalidArgument([FieldViolation("documents", "the stream carried no document")])
        info = await self.retriever.source_info(tenant, source)
        return retriever_pb2.IngestResponse(
            source=source, results=results, content_version=public_version(info.content_version)
        )

    async def _ingest(
        self,
        tenant: str,
        source: str,
        document: retriever_pb2.IngestDocument,
        position: int,
        limit: int,
    ) -> IngestOutcome:
        document_id = document.document_id
        if position > limit:
            return IngestOutcome(
                document_id,
                "failed",
                error=f"stream carries more than max_documents_per_stream={limit} documents "
                "(GEARSHIFT_RETRIEVER_MAX_DOCUMENTS_PER_STREAM); send the rest in another stream",
            )
        if not document_id.strip():
            return IngestOutcome(document_id, "failed", error="document_id is required")
        if len(document_id) > MAX_DOCUMENT_ID_CHARS:
            return IngestOutcome(
                document_id[:80],
                "failed",
                error=f"document_id is longer than {MAX_DOCUMENT_ID_CHARS} characters",
            )
        if document.media_type and document.media_type not in ("text/markdown", "text/plain"):
            return IngestOutcome(
                document_id,
                "failed",
                error=f"media_type {document.media_type!r} is not text/markdown or text/plain",
            )
        return await self.retriever.ingest_one(
            tenant,
            source,
            DocumentIn(
                document_id=document_id,
                text=document.text,
                title=document.title,
                media_type=document.media_type,
                metadata=dict(document.metadata),
            ),
        )

    @grpc_errors
    async def Search(
        self, request: retriever_pb2.SearchRequest, context: Context
    ) -> retriever_pb2.SearchResponse:
        tenant = self._tenant(context, request.tenant)
        violations: list[FieldViolation] = []
        source = _require_source(request.source)
        if not request.query.strip():
            violations.append(FieldViolation("query", "required: the question to search for"))
        top_k = request.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            violations.append(FieldViolation("top_k", f"must be 1 to {MAX_TOP_K}, not {top_k}"))
        mode = request.mode or "hybrid"
        if mode not in MODES:
            violations.append(FieldViolation("mode", f"{mode!r} is not one of {', '.join(MODES)}"))
        if violations:
            raise InvalidArgument(violations)
        vector = caller_embedding(request.embedding)
        hits, version = await self.retriever.search(
            tenant, source, request.query, vector, top_k, mode
        )
        return retriever_pb2.SearchResponse(
            passages=[_passage(source, hit) for hit in hits],
            content_version=public_version(version),
        )

    @grpc_errors
    async def Delete(
        self, request: retriever_pb2.DeleteRequest, context: Context
    ) -> retriever_pb2.DeleteResponse:
        tenant = self._tenant(context, request.tenant)
        source = _require_source(request.source)
        outcome = await self.retriever.delete(tenant, source, list(request.document_ids))
        return retriever_pb2.DeleteResponse(
            documents_deleted=outcome.documents,
            chunks_deleted=outcome.chunks,
            content_version=public_version(outcome.content_version),
        )

    @grpc_errors
    async def Stats(
        self, request: retriever_pb2.RetrieverStatsRequest, context: Context
    ) -> retriever_pb2.RetrieverStatsResponse:
        tenant = self._tenant(context, request.tenant)
        if request.source:
            _require_source(request.source)
            found = [await self.retriever.source_info(tenant, request.source)]
        else:
            found = await self.retriever.sources(tenant, None)
        return retriever_pb2.RetrieverStatsResponse(
            sources=[
                retriever_pb2.SourceStats(
                    source=info.source,
                    documents=info.documents,
                    chunks=info.chunks,
                    content_version=public_version(info.content_version),
                    last_ingested_at=info.last_ingested_at,
                )
                for info in found
            ],
            backend=self.retriever.backend.name,
        )
