"""How weights reach a model server: the fetch-weights init container for hf:// routes
(one download per cache volume, bounded by the cache's size) and image:// routes (an OCI
image the kubelet pulls once per node, mounted as a Kubernetes image volume).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gearshift.models.fetch import TooLarge, check_fits, parse_size, wanted_files
from gearshift.routes import ModelRoute, load_routes_file
from gearshift_operator import children
from gearshift_operator.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples/modelroutes"


def _route(example: str, **model: Any) -> ModelRoute:
    doc = load_routes_file(EXAMPLES / f"{example}.yaml")[0].to_dict()
    doc["spec"]["model"].update(model)
    return ModelRoute.model_validate(doc)


def _pod(route: ModelRoute) -> dict[str, Any]:
    pod: dict[str, Any] = children.deployment(route, Settings())["spec"]["template"]["spec"]
    return pod


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_hub_models_are_fetched_by_an_init_container_and_the_engine_stays_offline() -> None:
    route = _route("small", tokenSecretRef={"name": "hf", "key": "token"})
    assert route.spec.model.source.startswith("hf://")
    pod = _pod(route)
    (fetch,) = pod["initContainers"]
    engine = pod["containers"][0]
    assert fetch["name"] == "fetch-weights"
    assert fetch["image"] == engine["image"]  # no second image to pull or pin
    repo = route.spec.model.source.removeprefix("hf://")
    assert fetch["args"] == ["-m", "gearshift.models.fetch", repo, "--max-size", "64Gi"]
    assert "nvidia.com/gpu" not in fetch["resources"]["requests"]
    fetch_env, engine_env = _env(fetch), _env(engine)
    assert fetch_env["HF_HOME"] == engine_env["HF_HOME"] == "/cache/hf"
    assert fetch_env["HF_TOKEN_PATH"] == engine_env["HF_TOKEN_PATH"]
    assert "HF_HUB_OFFLINE" not in fetch_env
    assert engine_env["HF_HUB_OFFLINE"] == "1"  # the engine never downloads
    assert {m["name"] for m in fetch["volumeMounts"]} == {"cache", "hf-token", "tmp"}
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_shared_cache_claim_is_filled_once_and_bounded_by_its_size() -> None:
    shared = _pod(_route("small", cacheClaim="hf-cache"))
    (fetch,) = shared["initContainers"]
    assert "hf-cache" in {m["name"] for m in fetch["volumeMounts"]}
    assert "--max-size" not in fetch["args"]  # the claim's capacity bounds it
    sized = _pod(_route("small", cacheClaim="hf-cache", cacheSize="300Gi"))
    assert sized["initContainers"][0]["args"][-2:] == ["--max-size", "300Gi"]


def test_local_weights_need_no_fetch() -> None:
    assert "initContainers" not in _pod(_route("large"))  # pvc://


def test_weights_from_an_oci_image_are_an_image_volume() -> None:
    ref = "registry.example.com/models/llama-3.1-70b:v2"
    route = _route("large", source=f"image://{ref}//llama-3.1-70b-instruct")
    pod = _pod(route)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["weights"]["image"] == {"reference": ref, "pullPolicy": "IfNotPresent"}
    engine = pod["containers"][0]
    mounts = {m["name"]: m for m in engine["volumeMounts"]}
    assert mounts["weights"] == {"name": "weights", "mountPath": "/weights", "readOnly": True}
    assert _env(engine)["GEARSHIFT_SLM_MODEL"] == "/weights/llama-3.1-70b-instruct"
    assert "initContainers" not in pod
    whole = _pod(_route("large", source="image://ghcr.io/acme/weights@sha256:" + "a" * 64))
    assert _env(whole["containers"][0])["GEARSHIFT_SLM_MODEL"] == "/weights"


@pytest.mark.parametrize(
    "source", ["image://", "image://Registry/x", "image://a//", "image://a b", "image:///x"]
)
def test_malformed_image_sources_are_refused(source: str) -> None:
    with pytest.raises(ValueError, match="source"):
        _route("large", source=source)


def test_only_what_vllm_loads_is_fetched() -> None:
    repo = [
        "config.json",
        "tokenizer.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "original/consolidated.00.pth",
        "flax_model.msgpack",
        "model.Q4_K_M.gguf",
    ]
    assert wanted_files(repo) == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ]
    # Without safetensors, the PyTorch weights are what vLLM loads.
    assert wanted_files(["config.json", "pytorch_model.bin"]) == [
        "config.json",
        "pytorch_model.bin",
    ]


def test_a_model_larger_than_the_cache_is_refused_before_downloading() -> None:
    sizes = {"a.safetensors": 40 * 2**30, "b.safetensors": 30 * 2**30, "config.json": None}
    assert check_fits(sizes, None, "org/m") == 70 * 2**30
    assert check_fits(sizes, parse_size("80Gi"), "org/m") == 70 * 2**30
    with pytest.raises(TooLarge, match=r"org/m needs 70\.0 GiB .* limited to 64\.0 GiB"):
        check_fits(sizes, parse_size("64Gi"), "org/m")


def _fetch(hf_home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = f"{REPO / 'services'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "gearshift.models.fetch", "acme/tiny", "--max-size", "1Gi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_pod_finding_the_model_in_the_shared_cache_downloads_nothing(tmp_path: Path) -> None:
    """The second pod on a cache claim (here offline, so any download attempt would fail)."""
    missing = _fetch(tmp_path)
    assert missing.returncode == 1
    assert "could not fetch acme/tiny" in missing.stderr

    repo = tmp_path / "hub" / "models--acme--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    found = _fetch(tmp_path)
    assert found.returncode == 0, found.stderr
    assert str(snapshot) in found.stderr


def _fetch_rev(hf_home: Path, revision: str, offline: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HOME": str(hf_home)}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        # Online, but nothing answers there: any request to the Hub fails at once.
        env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="2")
    env["PYTHONPATH"] = f"{REPO / 'services'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "gearshift.models.fetch", "acme/tiny", "--revision", revision],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_pinned_revision_is_fetched_once_per_cache_and_then_found_warm(tmp_path: Path) -> None:
    """The marker a completed fetch leaves per revision: the next pod (or the staging Job)
    on the same claim starts without asking the Hub anything; another revision is fetched."""
    repo = tmp_path / "hub" / "models--acme--tiny"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    first = _fetch_rev(tmp_path, "v1", offline=True)  # stands in for the first download
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "gearshift-fetched" / "acme%2Ftiny@v1"
    assert marker.read_text().strip() == str(snapshot)

    warm = _fetch_rev(tmp_path, "v1", offline=False)
    assert warm.returncode == 0, warm.stderr
    assert "is warm in the cache" in warm.stderr

    other = _fetch_rev(tmp_path, "v2", offline=False)
    assert other.returncode == 1  # not fetched yet: it goes to the Hub (unreachable here)
