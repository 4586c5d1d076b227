"""Fixtures for tests against the local Kubernetes cluster.

The ``cluster`` fixture brings the cluster up once per session or reuses one that is
already up, in which case it also leaves it running afterwards. Without built binaries
the cluster tests skip, except under CI (``CI`` set), where ``up`` builds them.
Each test gets its own namespace, deleted when it ends.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Generator, Iterator

import pytest

from tests.kube.kubectl import kubectl, wait_for
from tests.kube.localkube import cli, controlplane, procs
from tests.kube.localkube.config import REPO_ROOT, Config, binaries_dir

# Fixtures whose value is the namespace a test's pods run in, or holds it as `.namespace`.
_NAMESPACE_FIXTURES = ("namespace", "operated", "operator")
POD_LOG_LINES = 150


def pod_logs(namespace: str, lines: int = POD_LOG_LINES) -> str:
    """The last lines of every container of every pod in the namespace.

    Pods are deleted with the test's namespace, and their logs with them, so a failure has
    to be read before the teardown. The local kubelet appends a restarted container's
    output to the same log, so the tail spans restarts.
    """
    pods = kubectl("get", "pods", "-n", namespace, "-o", "name", check=False).split()
    parts = []
    for pod in pods:
        args = ["logs", pod, "-n", namespace, "--all-containers", f"--tail={lines}"]
        parts.append(f"== {pod} ==\n{kubectl(*args, check=False)}")
    return "\n".join(parts) or f"(no pods in {namespace})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """On a failed test, add its pods' logs to the report, read before the namespace goes."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name in _NAMESPACE_FIXTURES:
        ns = funcargs.get(name)
        ns = getattr(ns, "namespace", ns)
        if isinstance(ns, str):
            report.sections.append((f"pod logs in {ns}", pod_logs(ns)))
            return


def _running(cfg: Config) -> bool:
    states = {**controlplane.running(cfg), cli.AGENT: procs.recorded(cfg.pids, cli.AGENT)}
    return all(states.values())


@pytest.fixture(scope="session")
def cluster() -> Iterator[Config]:
    if os.geteuid() != 0:
        pytest.skip("the local Kubernetes cluster needs root (network namespaces)")
    if binaries_dir() is None and not os.environ.get("CI"):
        # Outside CI, do not start a multi-minute Go build from a plain `pytest` run.
        pytest.skip(
            "control plane not built: run tests/kube/ci.sh or "
            "`python -m tests.kube.localkube build` (CI=true builds it here)"
        )
    cfg = Config()
    reuse = _running(cfg)
    if not reuse:
        cli.up(cfg)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cfg.kubeconfig)
    bindir = binaries_dir()
    if shutil.which("kubectl") is None and bindir is not None:
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"  # build.sh made one
    try:
        yield cfg
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if not reuse:
            cli.down(cfg)


@pytest.fixture
def namespace(cluster: Config) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    # The ServiceAccount controller must create "default" before pods are admitted.
    wait_for(
        f"service account default in {name}",
        lambda: kubectl("get", "sa", "default", "-n", name, "--ignore-not-found").strip(),
        timeout=30,
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crd(cluster: Config) -> None:
    """The RaftCluster CRD installed and Established (it stays: CRDs are cluster-wide)."""
    kubectl("apply", "-f", str(REPO_ROOT / "crds" / "raftcluster.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/raftclusters.flotilla.dev", "--timeout=30s")
