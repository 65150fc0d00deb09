"""Questions about the project's docs/, with what a correct answer must mention.

Written for this project's benchmarks (not taken from any public data set): each question's
expected document, the section that answers it, and key terms taken verbatim from that
section; an answer is counted correct when it contains one of them (case-insensitive).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DocsQuestion:
    question: str
    document: str  # file under docs/
    section: str  # the heading that answers it
    key_terms: tuple[str, ...]


DOCS_QUESTIONS = [
    DocsQuestion(
        "How do I set the cache's maximum false-hit rate?",
        "cache.md",
        "Settings",
        ("max_false_hit_rate", "GEARSHIFT_CACHE_MAX_FALSE_HIT_RATE"),
    ),
    DocsQuestion(
        "What does the verifier check before a semantic cache hit is served?",
        "cache.md",
        "The verifier (precision step)",
        ("opposite words", "negation", "hard veto", "Jaccard"),
    ),
    DocsQuestion(
        "How do I invalidate cached answers of a tenant?",
        "cache.md",
        "Invalidate",
        ("scope.tenant", "older_than_seconds", "context_digest"),
    ),
    DocsQuestion(
        "Can the semantic cache keep its entries in PostgreSQL?",
        "cache.md",
        "Backends",
        ("pgvector", "vector_cosine_ops"),
    ),
    DocsQuestion(
        "How do I install Gearshift with Helm?",
        "helm.md",
        "Install",
        ("helm install", "helm/gearshift", "router.apiKeys.existingSecret"),
    ),
    DocsQuestion(
        "Which NetworkPolicies does the chart create?",
        "helm.md",
        "NetworkPolicies",
        ("networkPolicy.router.from", "metricsFrom", "egress"),
    ),
    DocsQuestion(
        "Which container images are built and how?",
        "helm.md",
        "Container images (`docker/`)",
        ("Dockerfile.cpu", "Dockerfile.gpu", "docker build", "gearshift-gpu"),
    ),
    DocsQuestion(
        "Is there a Grafana dashboard for the mesh?",
        "helm.md",
        "Grafana dashboard",
        ("grafanaDashboard.enabled", "dashboards/gearshift.json", "grafana_dashboard"),
    ),
    DocsQuestion(
        "Which Prometheus metric counts router escalations?",
        "metrics.md",
        "Metrics",
        ("gearshift_router_escalations_total", "escalations_total"),
    ),
    DocsQuestion(
        "How does the operator scale a ModelRoute with load?",
        "operator.md",
        "Autoscaling",
        ("waitingRequests", "scaleDownStabilizationSeconds", "GetModelInfo", "scale_up_max_factor"),
    ),
    DocsQuestion(
        "What does a ModelRoute own in the cluster?",
        "operator.md",
        "What a route owns",
        ("PodDisruptionBudget", "ConfigMap", "headless", "kopf.adopt"),
    ),
    DocsQuestion(
        "Which rules reject a bad ModelRoute at kubectl apply?",
        "operator.md",
        "Validation at `kubectl apply` (schema + CEL)",
        ("x-kubernetes-validations", "mutually exclusive", "replicas.min", "maxShare"),
    ),
    DocsQuestion(
        "What status conditions does a route report?",
        "operator.md",
        "Status",
        ("Progressing", "Degraded", "FallbackResolved", "AllReplicasReady"),
    ),
    DocsQuestion(
        "How does the proxy keep provider API keys?",
        "proxy.md",
        "Behaviour",
        ("redact", "mtime", "Bearer", "logging filter"),
    ),
    DocsQuestion(
        "What happens when an upstream provider keeps failing?",
        "proxy.md",
        "Behaviour",
        ("circuit breaker", "failure_threshold", "half-open", "cooldown_s"),
    ),
    DocsQuestion(
        "How does the proxy count the cost of requests?",
        "proxy.md",
        "Behaviour",
        ("input_per_mtok", "output_per_mtok", "cost_usd", "per million"),
    ),
    DocsQuestion(
        "How does the router choose between the small and the large model?",
        "router.md",
        "What happens to a request",
        ("threshold_for_share", "large_share_cap", "difficulty_threshold", "maxShare"),
    ),
    DocsQuestion(
        "Does the router offer an OpenAI-compatible HTTP API?",
        "router.md",
        "HTTP API",
        ("/v1/chat/completions", "/v1/models", "8080"),
    ),
    DocsQuestion(
        "What happens to a request for a route scaled to zero?",
        "router.md",
        "Routes scaled to zero",
        ("cold_start_wait_s", "gearshift.dev/demand", "ROUTE_COLD"),
    ),
    DocsQuestion(
        "How is a request traced across the services?",
        "router.md",
        "Tracing",
        ("traceparent", "x-gearshift-trace-id", "otlp_endpoint", "W3C"),
    ),
    DocsQuestion(
        "How was the difficulty scorer trained and evaluated?",
        "scorer.md",
        "Numbers",
        ("routing_dev.jsonl", "RouteLLM", "APGR", "cross-validation"),
    ),
    DocsQuestion(
        "How do I retrain the scorer on my own traffic?",
        "scorer.md",
        "Retrain on your own traffic",
        ("weak_correct", "strong_correct", "scorer.train"),
    ),
    DocsQuestion(
        "How do I run the small model server on vLLM?",
        "slm.md",
        "Running it",
        ("gearshift serve slm", "GEARSHIFT_SLM_MODEL", "--max-model-len", "SmolLM2-135M-Instruct"),
    ),
    DocsQuestion(
        "Which errors does the SLM server return?",
        "slm.md",
        "Errors",
        ("MODEL_NOT_SERVED", "ENGINE_LOADING", "NO_CHAT_TEMPLATE", "NO_TOOL_PARSER"),
    ),
]
