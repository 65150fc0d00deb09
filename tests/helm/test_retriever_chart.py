"""The chart's retriever: Deployment, Service, storage per backend, and its wiring."""

from __future__ import annotations

from tests.helm.chart import by_kind, component_name, env_of, find, objects_of


def test_the_embedded_retriever_keeps_its_documents_on_a_claim() -> None:
    objs = objects_of("retriever-values.yaml")
    name = component_name("retriever")
    dep = find(objs, "Deployment", name)
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["serve", "retriever"]
    env = env_of(container)
    assert env["GEARSHIFT_RETRIEVER_BACKEND"] == "usearch"
    assert env["GEARSHIFT_RETRIEVER_DATA_DIR"] == "/var/lib/gearshift/retriever"
    assert env["GEARSHIFT_RETRIEVER_MAX_DOCUMENT_BYTES"] == "2097152"
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["index"]["persistentVolumeClaim"]["claimName"] == name
    find(objs, "PersistentVolumeClaim", name)
    service = find(objs, "Service", name)
    assert service["spec"]["ports"][0]["port"] == 50055
    # The operator resolves DataSources without an endpoint to this Service.
    operator = find(objs, "Deployment", component_name("operator"))
    operator_env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    assert operator_env["GEARSHIFT_OPERATOR_RETRIEVER_ENDPOINT"].startswith(f"{name}.")
    assert operator_env["GEARSHIFT_OPERATOR_RETRIEVER_ENDPOINT"].endswith(".svc:50055")


def test_the_pgvector_retriever_reads_its_url_from_a_secret() -> None:
    objs = objects_of("retriever-pgvector-values.yaml")
    dep = find(objs, "Deployment", component_name("retriever"))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    url = next(e for e in container["env"] if e["name"] == "GEARSHIFT_RETRIEVER_POSTGRES_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "gearshift-pg", "key": "url"}
    assert env_of(container)["GEARSHIFT_RETRIEVER_BACKEND"] == "pgvector"
    assert dep["spec"]["replicas"] == 2
    assert not [
        c for c in by_kind(objs, "PersistentVolumeClaim") if "retriever" in c["metadata"]["name"]
    ]


def test_only_the_router_and_the_operator_reach_the_retriever() -> None:
    objs = objects_of("retriever-values.yaml")
    policy = find(objs, "NetworkPolicy", component_name("retriever"))
    peers = policy["spec"]["ingress"][0]["from"]
    components = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers}
    assert components == {"router", "operator"}


def test_the_retriever_is_off_by_default() -> None:
    objs = objects_of("default")
    assert not [d for d in by_kind(objs, "Deployment") if "retriever" in d["metadata"]["name"]]
