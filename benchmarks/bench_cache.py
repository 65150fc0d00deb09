"""Lookup latency of the cache service, per backend, at 10k and 100k entries.

    python benchmarks/bench_cache.py [--sizes 10000,100000] [--backends usearch,pgvector]

Entries are real question embeddings (QQP dev file, cached by the verifier
training; random unit vectors when absent) bulk-loaded into one scope, the worst
case for search. Lookups go through gRPC over loopback with a precomputed
embedding (as the router sends them), so the numbers are the cache's own cost:
exact path, ANN search, verifier. The baseline is an exact brute-force numpy scan
of the same vectors measured in the same run. pgvector runs on a private pgserver.

    python benchmarks/bench_cache.py --against /tmp/gs-17-baseline --sizes 10000
    python benchmarks/bench_cache.py --decision-ratio --sizes 10000 --rounds 6

compares this tree with another checkout of the project (e.g. a worktree of main):
each tree runs the same benchmark in a child process (its own `services/` first on
PYTHONPATH), alternating, `--rounds` times. The table gives the p50 of the lookups
that were semantic hits in each tree (median over rounds) and the ratio, this tree
over the other, so a slower hit decision shows whatever the machine's load.

`--decision-ratio` times the current hit decision against the previous one (the
verifier over every candidate, rebuilt in `PreviousDecider`) in one process: one cache
service whose decider is swapped between interleaved rounds, hit p50 and p99 each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from gearshift.cache.app import CacheApp, Settings, build_app
from gearshift.cache.decision import Candidate, Decision
from gearshift.cache.entry import Entry
from gearshift.cache.keys import exact_key, scope_key
from gearshift.cache.verifier import Verifier
from gearshift.dev.machine import describe_machine
from gearshift.embeddings import DIM
from gearshift.runtime.server import GrpcServiceHost
from gearshift.v1 import cache_pb2, cache_pb2_grpc, common_pb2

SCOPE = cache_pb2.CacheScope(tenant="bench", scope="smollm2", context_digest="")


def qqp_embeddings() -> tuple[list[str], npt.NDArray[np.float32]]:
    """Every QQP dev question with its embedding, as `train_verifier` caches them (the
    whole file's, not a sample's); empty when they are not cached."""
    from gearshift.embeddings.disk_cache import texts_key
    from gearshift.embeddings.model import EMBEDDING_VERSION
    from gearshift.learn.cache.qqp import EMBEDDING_CACHE_DIR, load_pairs

    pairs = load_pairs()
    unique = sorted(set(pairs.a + pairs.b))
    cache = EMBEDDING_CACHE_DIR / f"emb-{EMBEDDING_VERSION}-{texts_key(unique)}.npy"
    if cache.exists():
        return unique, np.load(cache).astype(np.float32)
    return [], np.zeros((0, DIM), dtype=np.float32)


def corpus(n: int) -> tuple[list[str], npt.NDArray[np.float32]]:
    """n questions with embeddings (QQP questions, extended by perturbed copies)."""
    texts, vectors = qqp_embeddings()
    rng = np.random.default_rng(0)
    out_t, out_v = list(texts[:n]), vectors[:n]
    while len(out_t) < n:
        need = n - len(out_t)
        if len(texts):
            idx = rng.integers(0, len(texts), need)
            extra = vectors[idx] + rng.normal(0, 0.05, (need, DIM)).astype(np.float32)
            out_t += [f"{texts[i]} (variant {len(out_t) + j})" for j, i in enumerate(idx)]
        else:
            extra = rng.normal(0, 1, (need, DIM)).astype(np.float32)
            out_t += [f"question {len(out_t) + j}" for j in range(need)]
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        out_v = np.concatenate([out_v, extra]) if len(out_v) else extra
    return out_t, out_v.astype(np.float32)


def entries(texts: list[str], vectors: npt.NDArray[np.float32]) -> list[Entry]:
    now = time.time()
    skey = scope_key(SCOPE)
    return [
        Entry(
            id=uuid.uuid4().hex,
            tenant=SCOPE.tenant,
            scope=SCOPE.scope,
            context_digest="",
            scope_key=skey,
            exact_key=exact_key(SCOPE, t),
            question=t,
            answer="an answer",
            model="bench",
            prompt_tokens=10,
            completion_tokens=20,
            total_tokens=30,
            cost_usd=0.0,
            created_at=now,
            expires_at=0.0,
            vector=v,
        )
        for t, v in zip(texts, vectors, strict=True)
    ]


async def load(app: CacheApp, items: list[Entry]) -> float:
    started = time.monotonic()
    backend = app.backend
    if backend.name == "pgvector":
        from gearshift.cache.backends.pgvector_backend import PgvectorBackend

        assert isinstance(backend, PgvectorBackend)
        await backend.open()
        async with backend.db.pool.connection(timeout=30) as conn:
            await conn.execute("SET statement_timeout = 0")
            await conn.execute("DROP INDEX IF EXISTS gearshift_cache_hnsw")
        await backend.put_many(items)
        async with backend.db.pool.connection(timeout=30) as conn:
            await conn.execute("SET statement_timeout = 0")
            await conn.execute("SET maintenance_work_mem = '1GB'")
            await conn.execute(
                "CREATE INDEX gearshift_cache_hnsw ON gearshift_cache_entries "
                "USING hnsw (embedding vector_cosine_ops)"
            )
            await conn.execute("ANALYZE gearshift_cache_entries")
    else:
        await backend.open()
        await backend.put_many(items)  # type: ignore[attr-defined]
    return time.monotonic() - started


@dataclass
class Measured:
    p50_ms: float
    p99_ms: float
    hit_p50_ms: float  # p50 of the lookups answered HIT_SEMANTIC (nan when none)
    hits: int


async def measure(
    stub: cache_pb2_grpc.CacheServiceAsyncStub,
    queries: list[tuple[str, list[float]]],
    concurrency: int,
    hit_latencies: list[float] | None = None,
) -> Measured:
    """Latencies of `queries`; semantic hits' latencies are also appended to
    `hit_latencies` when given (to pool them over rounds)."""
    latencies: list[float] = []
    hit_latencies = [] if hit_latencies is None else hit_latencies
    first_hit = len(hit_latencies)
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(queries):
            text, vector = queries[position]
            position += 1
            started = time.perf_counter()
            reply = await stub.Lookup(
                cache_pb2.LookupRequest(scope=SCOPE, text=text, embedding=vector), timeout=10
            )
            latencies.append(time.perf_counter() - started)
            if reply.outcome == common_pb2.CACHE_OUTCOME_HIT_SEMANTIC:
                hit_latencies.append(latencies[-1])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    mine = hit_latencies[first_hit:]
    hit_p50 = statistics.median(mine) * 1000 if mine else float("nan")
    return Measured(statistics.median(latencies) * 1000, p99 * 1000, hit_p50, len(mine))


def brute_force_ms(vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]) -> float:
    started = time.perf_counter()
    for q in queries:
        scores = vectors @ q
        np.argpartition(-scores, 4)[:4]
    return (time.perf_counter() - started) / len(queries) * 1000


async def run_one(
    backend: str, n: int, postgres_url: str, tmp: str, n_queries: int, as_json: bool = False
) -> list[str]:
    texts, vectors = corpus(n)
    settings = Settings(
        grpc_port=0,
        metrics_port=-1,
        backend=backend,  # type: ignore[arg-type]
        data_dir=f"{tmp}/{backend}-{n}",
        postgres_url=postgres_url,
        max_entries=10 * n,
        snapshot_interval_s=0,
        db_timeout_s=5.0,
    )
    app = build_app(settings)
    build_s = await load(app, entries(texts, vectors))
    host = GrpcServiceHost(app, settings)
    await host.start()
    rng = np.random.default_rng(1)
    pick = rng.integers(0, n, n_queries)
    # Queries: perturbed stored questions (semantic path) with their own text, half
    # of them asked as questions and half as requests ("Tell me: ..."), so both
    # operating points of the hit decision are timed.
    qv = vectors[pick] + rng.normal(0, 0.02, (n_queries, DIM)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    queries = [
        (texts[i] + " please" if j % 2 else "Tell me: " + texts[i].rstrip("?"), qv[j].tolist())
        for j, i in enumerate(pick)
    ]
    baseline = brute_force_ms(vectors, qv[:200])
    rows = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            await measure(stub, queries[:20], 1)  # warm up
            for concurrency in (1,) if as_json else (1, 32):
                m = await measure(stub, queries, concurrency)
                if as_json:
                    row = {"backend": backend, "n": n, "hit_p50_ms": m.hit_p50_ms, "hits": m.hits}
                    rows.append(json.dumps(row))
                else:
                    rows.append(
                        f"| {backend} | {n:,} | {concurrency} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | "
                        f"{m.hit_p50_ms:.2f} ({m.hits}) | {baseline:.2f} | "
                        f"{m.p50_ms / baseline:.1f}x | {build_s:.0f} |"
                    )
                print(rows[-1], flush=True)
    finally:
        if backend == "pgvector":
            async with app.backend.db.pool.connection() as conn:  # type: ignore[attr-defined]
                await conn.execute("DROP TABLE gearshift_cache_entries")
        await host.stop(0)
    return rows


class PreviousDecider:
    """The hit decision before the nearest-first decider (git 7979355^, rebuilt here): the
    verifier over every candidate above `min_similarity`, the most probable one served
    when it reaches the question threshold. Kept only to time it against the current one."""

    def __init__(self, verifier: Verifier, max_false_hit_rate: float, min_similarity: float):
        self.verifier = verifier
        self.threshold_value = verifier.threshold_for(max_false_hit_rate).threshold
        self.min_similarity = min_similarity

    def threshold(self, style: str) -> float:
        return self.threshold_value

    def decide(
        self, text: str, vector: npt.NDArray[np.float32], candidates: Sequence[Candidate]
    ) -> Decision:
        found = [i for i, c in enumerate(candidates) if c.similarity >= self.min_similarity]
        if not found:
            return Decision(served=None)
        probs = self.verifier.predict(
            [text] * len(found),
            [candidates[i].question for i in found],
            np.repeat(vector[None, :], len(found), axis=0),
            np.stack([candidates[i].vector for i in found]),
        )
        best = int(np.argmax(probs))
        index, confidence = found[best], float(probs[best])
        return Decision(
            served=index if confidence >= self.threshold_value else None,
            judged=index,
            similarity=candidates[index].similarity,
            confidence=confidence,
        )


def paraphrase_queries(
    texts: list[str], vectors: npt.NDArray[np.float32], n: int, count: int
) -> list[tuple[str, list[float]]]:
    """Lookups that should hit: the QQP duplicates of stored questions (their own text
    and embedding), so both decisions judge real paraphrases; perturbed stored questions
    when the QQP embeddings are not cached."""
    from gearshift.learn.cache.qqp import load_pairs

    stored = set(texts[:n])
    row = {t: i for i, t in enumerate(texts)}
    pairs = load_pairs()
    found: list[tuple[str, list[float]]] = []
    if len(texts) > n:  # real QQP questions beyond the stored ones
        for a, b, duplicate in zip(pairs.a, pairs.b, pairs.label, strict=True):
            for kept, asked in ((a, b), (b, a)):
                if duplicate and kept in stored and asked not in stored and asked in row:
                    found.append((asked, vectors[row[asked]].tolist()))
            if len(found) >= count:
                return found[:count]
    rng = np.random.default_rng(1)
    pick = rng.integers(0, n, count - len(found))
    qv = vectors[pick] + rng.normal(0, 0.02, (len(pick), DIM)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    return found + [(texts[i] + " please", qv[j].tolist()) for j, i in enumerate(pick)]


async def decision_ratio(args: argparse.Namespace) -> None:
    """Hit latency of the current decision against the previous one, in one process:
    the same cache service (usearch), its decider swapped between interleaved rounds."""
    n = int(args.sizes.split(",")[0])
    texts, vectors = corpus(n)
    all_texts, all_vectors = qqp_embeddings()
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-cache-") as tmp:
        settings = Settings(
            grpc_port=0,
            metrics_port=-1,
            backend="usearch",
            data_dir=f"{tmp}/usearch-{n}",
            max_entries=10 * n,
            snapshot_interval_s=0,
        )
        app = build_app(settings)
        await load(app, entries(texts, vectors))
        host = GrpcServiceHost(app, settings)
        await host.start()
        assert app.servicer is not None
        current = app.servicer.decider
        previous = PreviousDecider(
            app.verifier, settings.max_false_hit_rate, settings.min_similarity
        )
        queries = paraphrase_queries(
            all_texts or texts, all_vectors if all_texts else vectors, n, args.queries
        )
        hits: dict[str, list[float]] = {"previous": [], "current": []}
        served: dict[str, int] = {"previous": 0, "current": 0}
        load_before = os.getloadavg()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
                stub = cache_pb2_grpc.CacheServiceStub(channel)
                for decider in (previous, current):  # warm up both
                    app.servicer.decider = decider  # type: ignore[assignment]
                    await measure(stub, queries[:20], 1)
                for _ in range(args.rounds):
                    for name, decider in (("previous", previous), ("current", current)):
                        app.servicer.decider = decider  # type: ignore[assignment]
                        m = await measure(stub, queries, 1, hits[name])
                        served[name] += m.hits
        finally:
            app.servicer.decider = current
            await host.stop(0)
    print(f"Machine: {describe_machine()}")
    loads = ", ".join(f"{x:.1f}" for x in (*load_before, *os.getloadavg()))
    print(
        f"usearch, {n:,} entries, 1 caller, {args.queries} lookups per round, {args.rounds} "
        f"interleaved rounds per decision; load average before and after: {loads}\n"
    )
    print("| decision | semantic hits | hit p50 ms | hit p99 ms |")
    print("|---|---:|---:|---:|")
    stats = {}
    for name, values in hits.items():
        values.sort()
        p50 = statistics.median(values) * 1000
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))] * 1000
        stats[name] = (p50, p99)
        print(f"| {name} | {served[name]} | {p50:.2f} | {p99:.2f} |")
    (p50_now, p99_now), (p50_old, p99_old) = stats["current"], stats["previous"]
    print(f"\ncurrent / previous: p50 {p50_now / p50_old:.2f}, p99 {p99_now / p99_old:.2f}")


def compare(other: Path, args: argparse.Namespace) -> None:
    """Alternating child runs of this tree and `other`; hit p50 per tree and the ratio."""
    here = Path(__file__).resolve().parents[1]
    results: dict[str, list[dict[str, Any]]] = {"this": [], "other": []}
    for _ in range(args.rounds):
        for name, tree in (("other", other), ("this", here)):
            env = dict(os.environ, PYTHONPATH=f"{tree}/services:{tree}/operator")
            command = [sys.executable, str(Path(__file__).resolve()), "--json"]
            command += ["--sizes", args.sizes, "--backends", args.backends]
            command += ["--queries", str(args.queries)]
            out = subprocess.run(
                command, env=env, capture_output=True, text=True, check=True, timeout=1800
            ).stdout
            results[name] += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    print(f"Machine: {describe_machine()}; this tree {here}, other tree {other}\n")
    print(
        "| backend | entries | hit p50 ms, other | hit p50 ms, this | this / other "
        "| hits (other / this) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        for n in (int(s) for s in args.sizes.split(",")):

            def p50(name: str, backend: str = backend, n: int = n) -> float:
                rows = [r for r in results[name] if r["backend"] == backend and r["n"] == n]
                return float(statistics.median(r["hit_p50_ms"] for r in rows))

            def hits(name: str, backend: str = backend, n: int = n) -> int:
                rows = [r for r in results[name] if r["backend"] == backend and r["n"] == n]
                return int(statistics.median(r["hits"] for r in rows))

            print(
                f"| {backend} | {n:,} | {p50('other'):.2f} | {p50('this'):.2f} | "
                f"{p50('this') / p50('other'):.2f} | {hits('other')} / {hits('this')} |"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="usearch,pgvector")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per tree")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--decision-ratio",
        action="store_true",
        help="hit latency of the current decision vs the previous one, one process (usearch)",
    )
    args = parser.parse_args()
    if args.decision_ratio:
        await decision_ratio(args)
        return
    if args.against is not None:
        compare(args.against, args)
        return
    if not args.json:
        print(f"Machine: {describe_machine()}\n")
        print(
            "| backend | entries | callers | p50 ms | p99 ms | hit p50 ms (hits) | "
            "brute-force scan ms (baseline) | p50 / baseline | load s |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-cache-") as tmp:
        server = None
        url = ""
        if "pgvector" in args.backends:
            import pgserver

            server = pgserver.get_server(  # type: ignore[attr-defined]
                f"{tmp}/pg", cleanup_mode="stop"
            )
            server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
            url = server.get_uri()
        try:
            for backend in args.backends.split(","):
                for n in (int(s) for s in args.sizes.split(",")):
                    await run_one(backend, n, url, tmp, args.queries, args.json)
        finally:
            if server is not None:
                server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
