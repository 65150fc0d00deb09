"""Search latency of the retriever per backend on 100k chunks, and recall@5 on docs/.

    python benchmarks/bench_retriever.py [--chunks 100000] [--backends usearch,pgvector]

Scale: synthetic chunks (60 words drawn Zipf-like from a 20k-word vocabulary) with
random unit vectors, loaded straight into the backend; queries are a stored chunk's
vector with noise plus three of its words outside the vocabulary's 100 most frequent
(which stand for stopwords), so both rankings have real matches. The
search runs through the service core (`Retriever.search`) with the query vector given,
as the router sends it, so the figures are the retriever's own cost (no embedding, no
gRPC hop). The baseline is an exact brute-force numpy scan of the same vectors, timed
in the same run. pgvector runs on a private pgserver; its keyword-using modes run twice
over the same rows, ranking every match (`keyword_rank_limit=0`, the query before the
bound) and ranking the bounded candidate set (the default), so the two compare in one run.

Recall: the project's docs/ are chunked and embedded with the real model (embeddings
cached on disk), and each question in QUESTIONS (written for this benchmark, not taken
from any public data set) counts as found when one of the top 5 passages comes from
its expected document.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gearshift.dev.machine import describe_machine
from gearshift.embeddings import DIM
from gearshift.retriever.app import make_backend
from gearshift.retriever.backends import Backend
from gearshift.retriever.chunking import chunk_document, markdown_title
from gearshift.retriever.core import MODES, Retriever
from gearshift.retriever.records import ChunkRecord, StoredDocument, content_hash
from gearshift.retriever.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"
EMBEDDINGS = Path.home() / ".cache" / "gearshift" / "bench-retriever"
CHUNKS_PER_DOCUMENT = 1000
TENANT = "bench"

# (question, expected document under docs/)
QUESTIONS = [
    ("How do I set the cache's maximum false-hit rate?", "cache.md"),
    ("What does the verifier check before a semantic cache hit is served?", "cache.md"),
    ("How do I invalidate cached answers of a tenant?", "cache.md"),
    ("Can the semantic cache keep its entries in PostgreSQL?", "cache.md"),
    ("How do I install Gearshift with Helm?", "helm.md"),
    ("Which NetworkPolicies does the chart create?", "helm.md"),
    ("Which container images are built and how?", "helm.md"),
    ("Is there a Grafana dashboard for the mesh?", "helm.md"),
    ("Which Prometheus metric counts router escalations?", "metrics.md"),
    ("How does the operator scale a ModelRoute with load?", "operator.md"),
    ("What does a ModelRoute own in the cluster?", "operator.md"),
    ("Which rules reject a bad ModelRoute at kubectl apply?", "operator.md"),
    ("What status conditions does a route report?", "operator.md"),
    ("How does the proxy keep provider API keys?", "proxy.md"),
    ("What happens when an upstream provider keeps failing?", "proxy.md"),
    ("How does the proxy count the cost of requests?", "proxy.md"),
    ("How does the router choose between the small and the large model?", "router.md"),
    ("Does the router offer an OpenAI-compatible HTTP API?", "router.md"),
    ("What happens to a request for a route scaled to zero?", "router.md"),
    ("How is a request traced across the services?", "router.md"),
    ("How was the difficulty scorer trained and evaluated?", "scorer.md"),
    ("How do I retrain the scorer on my own traffic?", "scorer.md"),
    ("How do I run the small model server on vLLM?", "slm.md"),
    ("Which errors does the SLM server return?", "slm.md"),
]


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    latencies = sorted(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return statistics.median(latencies) * 1000, p99 * 1000


def synthetic(n: int, seed: int = 7) -> tuple[list[str], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i:05d}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    words = rng.choice(vocabulary, size=(n, 60), p=weights)
    texts = [" ".join(row) for row in words]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors


async def load(backend: Backend, texts: list[str], vectors: npt.NDArray[np.float32]) -> float:
    """Stores the chunks as documents of CHUNKS_PER_DOCUMENT chunks; seconds taken."""
    started = time.monotonic()
    pg = backend.name == "pgvector"
    if pg:
        await backend.open()
        async with backend.db.pool.connection(timeout=30) as conn:  # type: ignore[attr-defined]
            await conn.execute("DROP INDEX IF EXISTS gearshift_retriever_chunks_hnsw")
    for start in range(0, len(texts), CHUNKS_PER_DOCUMENT):
        records = [
            ChunkRecord(i - start, f"Section {i}", texts[i], vectors[i])
            for i in range(start, min(start + CHUNKS_PER_DOCUMENT, len(texts)))
        ]
        doc = StoredDocument(TENANT, "scale", f"doc-{start}", "Doc", "text/plain", {}, str(start))
        await backend.replace_document(doc, records, time.time())
    if pg:
        async with backend.db.pool.connection(timeout=30) as conn:  # type: ignore[attr-defined]
            await conn.execute("SET statement_timeout = 0")
            await conn.execute("SET maintenance_work_mem = '1GB'")
            await conn.execute(
                "CREATE INDEX gearshift_retriever_chunks_hnsw ON gearshift_retriever_chunks "
                "USING hnsw (embedding vector_cosine_ops)"
            )
            await conn.execute("VACUUM ANALYZE gearshift_retriever_chunks")
            await conn.execute("VACUUM ANALYZE gearshift_retriever_documents")
    return time.monotonic() - started


def variants(backend: Backend, settings: Settings) -> Iterator[tuple[str, str]]:
    """(row label, mode) for each measured row. On pgvector the keyword-using modes run
    twice on the same data: ranking every match (keyword_rank_limit 0, the old query)
    and ranking the bounded candidate set, so before and after share one run."""
    if backend.name != "pgvector":
        for mode in MODES:
            yield backend.name, mode
        return
    bounded = settings.keyword_rank_limit
    for mode in MODES:
        if mode == "vector":
            yield backend.name, mode
            continue
        for limit in (0, bounded):
            backend.keyword_rank_limit = limit  # type: ignore[attr-defined]
            yield (f"{backend.name} rank {'all matches' if limit == 0 else f'<= 2x{limit}'}", mode)
    backend.keyword_rank_limit = bounded  # type: ignore[attr-defined]


def brute_force_ms(vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]) -> float:
    started = time.perf_counter()
    for q in queries:
        scores = vectors @ q
        np.argpartition(-scores, 5)[:5]
    return (time.perf_counter() - started) / len(queries) * 1000


def settings_for(backend: str, tmp: str, url: str) -> Settings:
    return Settings(
        grpc_port=0,
        metrics_port=-1,
        backend=backend,  # type: ignore[arg-type]
        data_dir=f"{tmp}/{backend}",
        postgres_url=url,
        db_timeout_s=600.0,
    )


async def scale_rows(backend_name: str, n: int, n_queries: int, tmp: str, url: str) -> list[str]:
    texts, vectors = synthetic(n)
    settings = settings_for(backend_name, tmp, url)
    backend = make_backend(settings)
    await backend.open()
    build_s = await load(backend, texts, vectors)
    retriever = Retriever(settings, backend)
    rng = np.random.default_rng(1)
    pick = rng.integers(0, n, n_queries)
    qv = vectors[pick] + rng.normal(0, 0.02, (n_queries, DIM)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    # Three of the chunk's words outside the 100 most frequent ones: the vocabulary's head
    # stands for the stopwords a real query's keyword search leaves out.
    queries = [
        " ".join([w for w in texts[i].split() if int(w[1:]) >= 100][:3] or texts[i].split()[:3])
        for i in pick
    ]
    baseline = brute_force_ms(vectors, qv[:200])
    rows = []
    try:
        for label, mode in variants(backend, settings):
            for q, v in zip(queries[:10], qv[:10], strict=True):  # warm up
                await retriever.search(TENANT, "scale", q, v, 5, mode)
            latencies = []
            found = 0
            for index, (q, v) in enumerate(zip(queries, qv, strict=True)):
                started = time.perf_counter()
                hits, _ = await retriever.search(TENANT, "scale", q, v, 5, mode)
                latencies.append(time.perf_counter() - started)
                found += any(h.text == texts[pick[index]] for h in hits)
            p50, p99 = _percentiles(latencies)
            rows.append(
                f"| {label} | {n:,} | {mode} | {p50:.2f} | {p99:.2f} | {baseline:.2f} | "
                f"{p50 / baseline:.1f}x | {found / len(queries):.2f} | {build_s:.0f} |"
            )
            print(rows[-1], flush=True)
    finally:
        if backend.name == "pgvector":
            async with backend.db.pool.connection() as conn:  # type: ignore[attr-defined]
                for table in ("chunks", "documents", "sources"):
                    await conn.execute(f"DROP TABLE gearshift_retriever_{table}")
        await backend.close()
    return rows


async def recall_rows(backend_name: str, tmp: str, url: str) -> list[str]:
    from gearshift.embeddings.disk_cache import cached_embeddings

    settings = settings_for(backend_name, tmp + "/recall", url)
    backend = make_backend(settings)
    await backend.open()
    retriever = Retriever(settings, backend)
    files = sorted(DOCS.glob("*.md"))
    chunked = []
    for path in files:
        text = path.read_text()
        title = markdown_title(text) or path.name
        chunks = chunk_document(text, "text/markdown", title, settings.max_chunk_chars)
        chunked.append((path, text, title, chunks))
    all_texts = [c.indexed_text for _, _, _, chunks in chunked for c in chunks]
    vectors = cached_embeddings(all_texts, EMBEDDINGS)
    position = 0
    for path, text, title, chunks in chunked:
        records = [
            ChunkRecord(c.index, c.title, c.text, vectors[position + i])
            for i, c in enumerate(chunks)
        ]
        position += len(chunks)
        digest = content_hash(text, title, "text/markdown", {}, settings.max_chunk_chars)
        doc = StoredDocument(TENANT, "docs", path.name, title, "text/markdown", {}, digest)
        await backend.replace_document(doc, records, time.time())
    question_vectors = cached_embeddings([q for q, _ in QUESTIONS], EMBEDDINGS)
    rows = []
    try:
        for label, mode in variants(backend, settings):
            found = 0
            for (question, expected), vector in zip(QUESTIONS, question_vectors, strict=True):
                hits, _ = await retriever.search(TENANT, "docs", question, vector, 5, mode)
                found += any(h.document_id == expected for h in hits)
            rows.append(f"| {label} | {mode} | {len(QUESTIONS)} | {found / len(QUESTIONS):.2f} |")
            print(rows[-1], flush=True)
    finally:
        if backend.name == "pgvector":
            async with backend.db.pool.connection() as conn:  # type: ignore[attr-defined]
                for table in ("chunks", "documents", "sources"):
                    await conn.execute(f"DROP TABLE gearshift_retriever_{table}")
        await backend.close()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--backends", default="usearch,pgvector")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--skip-recall", action="store_true", help="skip recall@5 (embeds docs/ once)"
    )
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    print(f"Machine: {describe_machine()}\n")
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-retriever-") as tmp:
        server = None
        url = ""
        if "pgvector" in backends:
            import pgserver

            server = pgserver.get_server(  # type: ignore[attr-defined]
                f"{tmp}/pg", cleanup_mode="stop"
            )
            server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
            url = server.get_uri()
        try:
            print(
                "| backend | chunks | mode | p50 ms | p99 ms | brute-force scan ms (baseline) "
                "| p50 / baseline | target in top 5 | load s |"
            )
            print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
            for backend in backends:
                await scale_rows(backend, args.chunks, args.queries, tmp, url)
            if not args.skip_recall:
                print("\nRecall@5 on docs/ (questions written for this benchmark)\n")
                print("| backend | mode | questions | recall@5 |")
                print("|---|---|---:|---:|")
                for backend in backends:
                    await recall_rows(backend, tmp, url)
        finally:
            if server is not None:
                server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
