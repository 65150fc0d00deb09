"""`gearshift sources ...`: ingest files into a retriever, list, search and delete sources.

Files are read and decoded here, so a file that is not UTF-8 text (or cannot be
read) is reported on its own line while the others are ingested; everything the
retriever refuses (an oversized document names the limit) is reported the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gearshift.v1 import retriever_pb2, retriever_pb2_grpc

DEFAULT_RETRIEVER_ADDRESS = "127.0.0.1:50055"
SUFFIXES = {".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain"}
DOCUMENTS_PER_STREAM = 500
# The retriever accepts gRPC messages up to 16 MiB; bigger files are refused here.
MAX_FILE_BYTES = 15 * 1024 * 1024


@dataclass(frozen=True)
class FileResult:
    """What happened to one file."""

    path: str
    document_id: str
    status: str  # created | updated | unchanged | failed
    chunks: int = 0
    error: str = ""


@dataclass(frozen=True)
class _Candidate:
    path: Path
    document_id: str


def retriever_address(explicit: str | None = None) -> str:
    return explicit or os.environ.get("GEARSHIFT_RETRIEVER_ADDRESS", DEFAULT_RETRIEVER_ADDRESS)


def _metadata(api_key: str | None) -> list[tuple[str, str]]:
    key = api_key or os.environ.get("GEARSHIFT_API_KEY", "")
    return [("authorization", f"Bearer {key}")] if key else []


def collect(paths: Iterable[Path]) -> tuple[list[_Candidate], list[FileResult]]:
    """Files to ingest (folders walked for .md/.markdown/.txt) and paths refused outright.

    A file's document id is its name; a file found in folder D is `D.name/relative/path`,
    so ids do not depend on the directory the command runs from.
    """
    found: list[_Candidate] = []
    refused: list[FileResult] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in SUFFIXES:
                    relative = file.relative_to(path).as_posix()
                    found.append(_Candidate(file, f"{path.resolve().name}/{relative}"))
        elif path.is_file():
            if path.suffix.lower() in SUFFIXES:
                found.append(_Candidate(path, path.name))
            else:
                refused.append(
                    FileResult(
                        str(path), path.name, "failed", error="not a .md, .markdown or .txt file"
                    )
                )
        else:
            refused.append(FileResult(str(path), path.name, "failed", error="no such file"))
    return found, refused


def _read(candidate: _Candidate) -> str | FileResult:
    """The file's text, or why it cannot be ingested."""
    try:
        size = candidate.path.stat().st_size
        if size > MAX_FILE_BYTES:
            return FileResult(
                str(candidate.path),
                candidate.document_id,
                "failed",
                error=f"file is {size} bytes, over the {MAX_FILE_BYTES}-byte message limit",
            )
        data = candidate.path.read_bytes()
    except OSError as exc:
        return FileResult(
            str(candidate.path), candidate.document_id, "failed", error=f"unreadable: {exc}"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return FileResult(
            str(candidate.path),
            candidate.document_id,
            "failed",
            error=f"not UTF-8 text (byte {exc.start}: {exc.reason})",
        )


async def ingest_paths(
    address: str,
    source: str,
    paths: Sequence[Path],
    tenant: str = "",
    api_key: str | None = None,
    timeout_s: float = 600.0,
) -> tuple[list[FileResult], str]:
    """Ingests files and folders into `source`; one result per file and the content version."""
    candidates, results = collect(paths)
    readable: list[tuple[_Candidate, str]] = []
    for candidate in candidates:
        text = _read(candidate)
        if isinstance(text, FileResult):
            results.append(text)
        else:
            readable.append((candidate, text))
    version = ""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
        for start in range(0, len(readable), DOCUMENTS_PER_STREAM):
            batch = readable[start : start + DOCUMENTS_PER_STREAM]

            async def documents(
                batch: list[tuple[_Candidate, str]] = batch,
            ) -> AsyncIterator[retriever_pb2.IngestDocument]:
                for candidate, text in batch:
                    yield retriever_pb2.IngestDocument(
                        tenant=tenant,
                        source=source,
                        document_id=candidate.document_id,
                        text=text,
                        media_type=SUFFIXES[candidate.path.suffix.lower()],
                        metadata={"path": str(candidate.path)},
                    )

            response = await stub.Ingest(
                documents(), metadata=_metadata(api_key), timeout=timeout_s
            )
            version = response.content_version
            for (candidate, _), result in zip(batch, response.results, strict=True):
                results.append(
                    FileResult(
                        str(candidate.path),
                        result.document_id,
                        result.status,
                        result.chunks,
                        result.error,
                    )
                )
    return results, version


def add_parser(sub: Any) -> None:
    sources = sub.add_parser("sources", help="data sources: ingest documents, list, search")
    ssub = sources.add_subparsers(dest="sources_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--retriever",
            default=None,
            help="retriever gRPC address (default: $GEARSHIFT_RETRIEVER_ADDRESS or "
            f"{DEFAULT_RETRIEVER_ADDRESS}, where `gearshift up` runs it)",
        )
        parser.add_argument(
            "--api-key",
            default=None,
            help="bearer key sent with every call, for a retriever behind an authenticating "
            "gateway (default: $GEARSHIFT_API_KEY)",
        )
        parser.add_argument("--tenant", default="", help="tenant (default: 'default')")
        parser.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds")

    ingest = ssub.add_parser("ingest", help="ingest .md/.markdown/.txt files or folders")
    common(ingest)
    ingest.add_argument("--source", required=True, help="source name (a DNS-1123 label)")
    ingest.add_argument("paths", nargs="+", type=Path, help="files or folders")
    ingest.set_defaults(func=lambda a: asyncio.run(_ingest(a)))

    listing = ssub.add_parser("list", help="documents, chunks and version per source")
    common(listing)
    listing.add_argument("--source", default="", help="one source (default: all)")
    listing.set_defaults(func=lambda a: asyncio.run(_list(a)))

    search = ssub.add_parser("search", help="search one source")
    common(search)
    search.add_argument("--source", required=True)
    search.add_argument("query")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--mode", default="hybrid", choices=["hybrid", "vector", "keyword"])
    search.set_defaults(func=lambda a: asyncio.run(_search(a)))

    delete = ssub.add_parser("delete", help="delete documents, or a whole source")
    common(delete)
    delete.add_argument("--source", required=True)
    delete.add_argument(
        "--document", action="append", default=[], help="document id (repeat); none = all"
    )
    delete.set_defaults(func=lambda a: asyncio.run(_delete(a)))


def _fail(exc: grpc.aio.AioRpcError, address: str) -> int:
    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        print(
            f"is the retriever running at {address}? (`gearshift up` starts one)", file=sys.stderr
        )
    return 1


async def _ingest(args: argparse.Namespace) -> int:
    address = retriever_address(args.retriever)
    try:
        results, version = await ingest_paths(
            address, args.source, args.paths, args.tenant, args.api_key, args.timeout
        )
    except grpc.aio.AioRpcError as exc:
        return _fail(exc, address)
    for r in results:
        detail = f"{r.chunks} chunks" if r.status != "failed" else r.error
        print(f"{r.status:<9} {r.document_id}  ({detail})")
    failed = sum(r.status == "failed" for r in results)
    print(
        f"source {args.source}: {len(results) - failed} ingested, {failed} failed"
        + (f", content version {version}" if version else "")
    )
    return 1 if failed else 0


async def _list(args: argparse.Namespace) -> int:
    address = retriever_address(args.retriever)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
        try:
            stats = await stub.Stats(
                retriever_pb2.RetrieverStatsRequest(tenant=args.tenant, source=args.source),
                metadata=_metadata(args.api_key),
                timeout=args.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            return _fail(exc, address)
    print(f"{'SOURCE':<24} {'DOCUMENTS':>9} {'CHUNKS':>7}  {'VERSION':<16}  LAST INGESTED")
    for s in stats.sources:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.last_ingested_at))
        print(f"{s.source:<24} {s.documents:>9} {s.chunks:>7}  {s.content_version:<16}  {when}")
    print(f"backend: {stats.backend}")
    return 0


async def _search(args: argparse.Namespace) -> int:
    address = retriever_address(args.retriever)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
        try:
            found = await stub.Search(
                retriever_pb2.SearchRequest(
                    tenant=args.tenant,
                    source=args.source,
                    query=args.query,
                    top_k=args.top_k,
                    mode=args.mode,
                ),
                metadata=_metadata(args.api_key),
                timeout=args.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            return _fail(exc, address)
    for i, p in enumerate(found.passages, start=1):
        print(f"{i}. [{p.score:.4f}] {p.document_id} > {p.chunk_title}")
        print("   " + p.text[:200].replace("\n", " "))
    print(f"content version {found.content_version}")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    address = retriever_address(args.retriever)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retriever_pb2_grpc.RetrieverServiceStub(channel)
        try:
            done = await stub.Delete(
                retriever_pb2.DeleteRequest(
                    tenant=args.tenant, source=args.source, document_ids=args.document
                ),
                metadata=_metadata(args.api_key),
                timeout=args.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            return _fail(exc, address)
    what = "source" if not args.document else "documents"
    print(
        f"deleted {done.documents_deleted} documents, {done.chunks_deleted} chunks "
        f"({what} {args.source})"
    )
    return 0
