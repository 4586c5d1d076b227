"""Image -> command mapping: unit checks, and a rolling upgrade that swaps real code."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.kube.kubectl import apply, get, http, kubectl, pod_ready, wait_for
from tests.kube.localkube import images
from tests.kube.localkube.config import Config
from tests.kube.localkube.images import ImageRule, resolve

RULES = [
    ImageRule(image="flotilla-node", entrypoint=["flotilla"], cmd=["serve"], env={"V": "{tag}"}),
    *images.BUILTIN,
]


def test_entrypoint_and_cmd_follow_kubernetes_semantics() -> None:
    assert resolve("flotilla-node:1.2", None, None, RULES).argv == ["flotilla", "serve"]
    assert resolve("flotilla-node:1.2", None, ["join"], RULES).argv == ["flotilla", "join"]
    assert resolve("flotilla-node:1.2", ["sh", "-c"], None, RULES).argv == ["sh", "-c"]
    assert resolve("flotilla-node:1.2", ["sh"], ["-c", "x"], RULES).argv == ["sh", "-c", "x"]


def test_registry_prefix_and_tag_substitution() -> None:
    got = resolve("ghcr.io/acme/flotilla-node:3.1.4", None, None, RULES)
    assert got.env == {"V": "3.1.4"}
    assert images.split_image("localhost:5000/a/b") == ("localhost:5000/a/b", "latest")
    assert images.split_image("a/b:1@sha256:00") == ("a/b", "1")


def test_unknown_or_uninstalled_image_is_an_error() -> None:
    with pytest.raises(images.ImageError, match="no local command"):
        resolve("nginx:1.27", None, None, RULES)
    missing = [ImageRule(image="x", entrypoint=["x"], path=["/nonexistent/{tag}/bin"])]
    with pytest.raises(images.ImageError, match="not installed"):
        resolve("x:9", None, None, missing)


def test_builtin_http_server_runs_this_interpreter() -> None:
    got = resolve("flotilla-test/httpserver:7", None, None, RULES)
    assert got.argv == [sys.executable, str(images.TESTSERVER)]
    assert got.env == {"IMAGE_TAG": "7"}


@pytest.fixture
def versioned_image(cluster: Config, tmp_path: Path) -> Iterator[str]:
    """Two installed "versions" of an image, each its own bin directory of code."""
    for version in ("v1", "v2"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        script = bindir / "versioned-server"
        script.write_text(
            "#!/bin/sh\n"
            f"export CODE_VERSION={version}\n"
            f'exec {sys.executable} {images.TESTSERVER} "$@"\n'
        )
        script.chmod(0o755)
    runtime = cluster.state / "images.yaml"
    rule = {
        "image": "example.test/versioned",
        "entrypoint": ["versioned-server"],
        "path": [f"{tmp_path}/{{tag}}/bin"],
    }
    runtime.write_text(yaml.safe_dump({"images": [rule]}))
    yield "example.test/versioned"
    runtime.unlink(missing_ok=True)


@pytest.mark.kube
def test_rolling_upgrade_runs_the_new_version_code(namespace: str, versioned_image: str) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "ver"},
        "spec": {
            "serviceName": "ver",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "ver"}},
            "template": {
                "metadata": {"labels": {"app": "ver"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "server",
                            "image": f"{versioned_image}:v1",
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }
    apply([sts], namespace)

    def versions() -> set[str] | None:
        pods = get("pods", None, namespace)["items"]
        if len(pods) != 2 or not all(pod_ready(p) for p in pods):
            return None
        seen = [json.loads(http(f"http://{p['status']['podIP']}:8080/info")) for p in pods]
        return {s["code_version"] for s in seen}

    assert wait_for("two ready v1 pods", versions, timeout=60) == {"v1"}
    kubectl("set", "image", "statefulset/ver", f"server={versioned_image}:v2", "-n", namespace)
    kubectl("rollout", "status", "statefulset/ver", "-n", namespace, "--timeout=90s")
    assert wait_for("two ready v2 pods", lambda: versions() == {"v2"}, timeout=60)


def test_the_operators_images_run_this_project() -> None:
    """What RaftCluster pods and the operator Deployment name runs the installed project."""
    import tomllib

    from flotilla.operator.model import DEFAULT_IMAGE

    project = tomllib.loads((images.DEFAULT_FILE.parents[2] / "pyproject.toml").read_text())
    rules = images.read_rules(images.DEFAULT_FILE)
    bindir = str(Path(sys.executable).parent)
    for tag in ("dev", project["project"]["version"]):
        node = resolve(f"{DEFAULT_IMAGE}:{tag}", ["flotilla-node"], ["--name=x"], rules)
        assert node.path == [bindir] and node.argv == ["flotilla-node", "--name=x"]
        operator = resolve(f"flotilla/operator:{tag}", None, ["run"], rules)
        assert operator.path == [bindir] and operator.argv == ["kopf", "run"]
    assert (Path(bindir) / "flotilla-node").exists() and (Path(bindir) / "kopf").exists()
