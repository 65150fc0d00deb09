"""`gearshift up`: the whole mesh on this machine, on its embedded default.

No GPU, cluster or API key: the SLM server runs the small model on vLLM's CPU
build, and the LLM proxy forwards to a local vLLM OpenAI-compatible server that
runs the same small model as a clearly labelled stand-in for a large model.
Configuration, the local API key, the cache's data and logs live in
$GEARSHIFT_HOME (default ~/.gearshift), so a second `up` starts warm.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gearshift.cli import local_state
from gearshift.cli.registry import available_services
from gearshift.cli.supervisor import ProcessSpec, StartupFailed, Supervisor

STANDIN_MODEL = "standin-large"
DEMO_QUESTION = "What is the capital of France?"
# Answered from the gearshift-docs source (docs/cache.md), with citations.
DOCS_DEMO_QUESTION = "How do I set the cache's maximum false-hit rate?"


@dataclass(frozen=True)
class Ports:
    router: int = 50051
    cache: int = 50052
    slm: int = 50053
    proxy: int = 50054
    upstream: int = 8001
    http: int = 8080
    retriever: int = 50055


def add_parser(sub: Any) -> None:
    up = sub.add_parser("up", help="run the whole local mesh until Ctrl-C")
    up.add_argument("--no-demo", action="store_true", help="skip the sample question")
    up.add_argument(
        "--only", default="", help="comma-separated services to start (default: all available)"
    )
    up.add_argument("--base-port", type=int, default=50051, help="router gRPC port; others follow")
    up.add_argument("--http-port", type=int, default=8080, help="router's OpenAI-compatible port")
    up.add_argument("--upstream-port", type=int, default=8001, help="stand-in vLLM server port")
    up.add_argument(
        "--otlp-endpoint", default="", help="OTLP/gRPC collector (host:port) for every service"
    )
    up.set_defaults(func=run)


def _gearshift(*args: str) -> list[str]:
    return [sys.executable, "-m", "gearshift.cli.main", *args]


def _common(name: str, home: Path, port: int, otlp_endpoint: str = "") -> list[str]:
    return [
        "--grpc-port", str(port),
        "--metrics-port", "0",
        "--log-format", "json",
        "--ready-file", str(home / "run" / f"{name}.ready"),
        "--service-name", f"gearshift-{name}",
        *(["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else []),
    ]  # fmt: skip


def plan(
    home: Path, ports: Ports, services: list[str], otlp_endpoint: str = ""
) -> list[ProcessSpec]:
    """The processes to start, in dependency order, for the services that exist."""
    from gearshift.models.prepare import (
        DEFAULT_MODEL_NAME,
        default_model_dir,
        is_prepared,
        prepare_default_model,
    )

    if not is_prepared(default_model_dir()):
        print(f"preparing {DEFAULT_MODEL_NAME} once (about 30 s)…", flush=True)
    model_dir = prepare_default_model()
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    specs: list[ProcessSpec] = []
    if "cache" in services:
        specs.append(
            ProcessSpec(
                "cache",
                _gearshift(
                    "serve",
                    "cache",
                    *_common("cache", home, ports.cache, otlp_endpoint),
                    "--data-dir",
                    str(home / "cache"),
                ),
                env,
                ready_file=home / "run" / "cache.ready",
                description=f"semantic cache (usearch, {home / 'cache'}) :{ports.cache}",
            )
        )
    if "slm" in services:
        specs.append(
            ProcessSpec(
                "slm",
                _gearshift(
                    "serve",
                    "slm",
                    *_common("slm", home, ports.slm, otlp_endpoint),
                    "--model",
                    str(model_dir),
                    "--served-model-name",
                    DEFAULT_MODEL_NAME,
                ),
                env,
                ready_file=home / "run" / "slm.ready",
                description=f"SLM server, {DEFAULT_MODEL_NAME} on vLLM (CPU) :{ports.slm}",
            )
        )
    if "proxy" in services:
        from gearshift.proxy.config import local_standin_config
        from gearshift.routes.local import STANDIN_TOOL_FLAGS

        specs.append(
            ProcessSpec(
                "upstream",
                [
                    sys.executable,
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    str(model_dir),
                    "--served-model-name",
                    STANDIN_MODEL,
                    "--dtype",
                    "float32",
                    "--enforce-eager",
                    "--max-model-len",
                    "2048",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ports.upstream),
                    *STANDIN_TOOL_FLAGS,
                ],
                env,
                health_url=f"http://127.0.0.1:{ports.upstream}/health",
                liveness_failures=12,  # a minute without an answer: wedged, restart it
                description=f"stand-in 'large' model: {DEFAULT_MODEL_NAME} behind vllm serve "
                f":{ports.upstream}",
            )
        )
        config = local_standin_config(
            f"http://127.0.0.1:{ports.upstream}/v1", STANDIN_MODEL, STANDIN_MODEL
        )
        config_file = home / "proxy.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        specs.append(
            ProcessSpec(
                "proxy",
                _gearshift(
                    "serve",
                    "proxy",
                    *_common("proxy", home, ports.proxy, otlp_endpoint),
                    "--config-file",
                    str(config_file),
                ),
                env,
                ready_file=home / "run" / "proxy.ready",
                description=f"LLM proxy -> stand-in upstream :{ports.proxy}",
            )
        )
    if "retriever" in services:
        specs.append(
            ProcessSpec(
                "retriever",
                _gearshift(
                    "serve",
                    "retriever",
                    *_common("retriever", home, ports.retriever, otlp_endpoint),
                    "--data-dir",
                    str(home / "retriever"),
                ),
                env,
                ready_file=home / "run" / "retriever.ready",
                description=f"retriever (usearch + SQLite, {home / 'retriever'}) "
                f":{ports.retriever}",
            )
        )
    if "router" in services:
        from gearshift.routes.local import local_default_routes

        routes = local_default_routes(
            slm_address=f"127.0.0.1:{ports.slm}",
            slm_model=DEFAULT_MODEL_NAME,
            proxy_address=f"127.0.0.1:{ports.proxy}",
            llm_model=STANDIN_MODEL,
        )
        if "retriever" in services:
            from gearshift.cli.local_sources import datasource_document

            routes.append(datasource_document(f"127.0.0.1:{ports.retriever}"))
        routes_file = home / "routes.yaml"
        routes_file.write_text(yaml.safe_dump_all(routes, sort_keys=False))
        local_state.local_api_key(create=True)
        args = [
            *_common("router", home, ports.router, otlp_endpoint),
            "--http-port", str(ports.http),
            "--routes-file", str(routes_file),
            "--api-keys-file", str(home / local_state.KEYS_FILE),
            "--outcomes-dir", str(home / "router"),
            # The embedded 135M model cannot write a grounded answer (3 of 24 docs questions
            # right, benchmarks/eval_source_answers.py): answers from a source quote the
            # best passage instead (16 of 24, in milliseconds). docs/router.md.
            "--source-answer", "quote",
            "--source-context-chars", "1000",
        ]  # fmt: skip
        if "cache" in services:
            args += ["--cache-address", f"127.0.0.1:{ports.cache}"]
        specs.append(
            ProcessSpec(
                "router",
                _gearshift("serve", "router", *args),
                env,
                ready_file=home / "run" / "router.ready",
                description=f"router gRPC :{ports.router}, OpenAI HTTP :{ports.http}",
            )
        )
    return specs


def _banner(home: Path, ports: Ports, services: list[str]) -> None:
    print()
    print("Gearshift is up.")
    if "router" in services:
        key = local_state.local_api_key()
        print(f"  gRPC router      127.0.0.1:{ports.router}")
        print(f"  OpenAI API       http://127.0.0.1:{ports.http}/v1  (api key {key})")
        print('  try              gearshift chat "Why is the sky blue?"')
    if "retriever" in services:
        print(f"  retriever        127.0.0.1:{ports.retriever}  (source gearshift-docs)")
        print(f"  sources          gearshift sources list --retriever 127.0.0.1:{ports.retriever}")
    print(f"  logs             {home / 'logs'}")
    print("Press Ctrl-C to stop.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    # Explicit handlers: a shell may start us with SIGINT ignored (background jobs), and
    # `kill` (SIGTERM) should stop the mesh as cleanly as Ctrl-C does.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    home = local_state.home()
    (home / "run").mkdir(parents=True, exist_ok=True)
    base = args.base_port
    ports = Ports(base, base + 1, base + 2, base + 3, args.upstream_port, args.http_port, base + 4)
    services = available_services()
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        services = [s for s in services if s in wanted]
    supervisor = Supervisor(home / "logs")
    try:
        supervisor.start_all(plan(home, ports, services, args.otlp_endpoint))
        if "retriever" in services:
            _ingest_docs(ports)
        _banner(home, ports, services)
        if "router" in services and not args.no_demo:
            _demo(ports, with_sources="retriever" in services)
        while True:  # until Ctrl-C / SIGTERM: a service that dies is restarted, not fatal
            supervisor.supervise()
            time.sleep(0.25)
    except StartupFailed as exc:
        print(f"gearshift up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        supervisor.stop_all()
        print("stopped.", flush=True)


def _demo(ports: Ports, with_sources: bool) -> None:
    """A question a model answers, then (with the retriever) one the project's docs answer."""
    from gearshift.cli.chat import _chat, chat_arguments

    questions = [DEMO_QUESTION, DOCS_DEMO_QUESTION] if with_sources else [DEMO_QUESTION]
    for question in questions:
        print(f"\n> {question}", flush=True)
        asyncio.run(_chat(chat_arguments([question, "--router", f"127.0.0.1:{ports.router}"])))
    print(f'\nask again, now from the cache:  gearshift chat "{DEMO_QUESTION}"', flush=True)


def _ingest_docs(ports: Ports) -> None:
    """Ingests the project's docs/ as gearshift-docs (unchanged files are no-ops)."""
    from gearshift.cli.local_sources import DOCS_SOURCE, docs_folder, ingest_docs

    folder = docs_folder()
    if folder is None:
        print(f"no docs/ folder beside this install; {DOCS_SOURCE} stays empty", flush=True)
        return
    print(f"ingesting {folder} as source {DOCS_SOURCE}…", flush=True)
    results = ingest_docs(f"127.0.0.1:{ports.retriever}", folder)
    counts = {s: sum(r.status == s for r in results) for s in ("created", "updated", "unchanged")}
    failed = [r for r in results if r.status == "failed"]
    print(
        f"{DOCS_SOURCE}: {counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {len(failed)} failed",
        flush=True,
    )
    for r in failed:
        print(f"  failed {r.document_id}: {r.error}", file=sys.stderr)
