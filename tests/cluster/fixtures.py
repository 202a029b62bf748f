"""pytest plugin: the ``cluster`` fixture and friends.

Enable it from tests/conftest.py with ``pytest_plugins = ["tests.cluster.fixtures"]`` (or on the
command line with ``-p tests.cluster.fixtures``). One plane is started per test session, lazily,
by the first test that asks for ``cluster``; tests that do not ask cost nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Generator, Iterator

import pytest

from tests.cluster.harness import Cluster, ClusterUnavailable
from tests.cluster.process_node import ProcessKubelet, start_process_kubelet

# The running cluster, for the failure hook (fixtures cannot be reached from hooks otherwise).
_ACTIVE: list[Cluster] = []
_KUBELETS: list[ProcessKubelet] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the test Kubernetes control plane")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (a CI timeout, `kill`) like Ctrl-C while the plane runs, so pytest unwinds
    and the fixture teardown stops the plane and removes its files. Python's default for
    SIGTERM is to die on the spot, which leaves the temp directory behind."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running control plane (or USE_EXISTING_CLUSTER's cluster) for the whole session.

    Skips, with the reason, when no binaries are available and none can be built or when
    KUBEROLLOUT_SKIP_CLUSTER is set; a plane that fails to start is an error, not a skip.
    """
    with _sigterm_as_interrupt():
        # Uncaptured, so that a first-time build's notice reaches the terminal.
        capman = request.config.pluginmanager.getplugin("capturemanager")
        try:
            with (capman.global_and_fixture_disabled() if capman
                  else contextlib.nullcontext()):
                c = Cluster.start()
        except ClusterUnavailable as exc:
            pytest.skip(f"no Kubernetes control plane: {exc}")
        _ACTIVE.append(c)
        try:
            yield c
        finally:
            _ACTIVE.remove(c)
            c.close()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (without waiting) afterwards."""
    name = cluster.new_namespace(request.node.name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def gpu_nodes(cluster: Cluster) -> list[str]:
    """Names of Ready nodes advertising nvidia.com/gpu; skips when there are none."""
    if missing := cluster.missing("kwok", "kube-scheduler"):
        pytest.skip(f"fake GPU nodes need components that are not available: "
                    f"{', '.join(missing)}")
    nodes = cluster.gpu_nodes()
    if not nodes:
        pytest.skip("no Ready node advertises nvidia.com/gpu in this cluster")
    return nodes


@pytest.fixture(scope="session")
def process_kubelet(cluster: Cluster) -> ProcessKubelet:
    """A node whose pods run as local processes (started on first use, stopped with the plane).

    Pods opt in with ``process_kubelet.scheduling`` (a kuberollout scheduling block) or
    ``process_kubelet.pod_placement`` (pod-spec fields). On an existing cluster there is no
    process kubelet: the test skips (its pods would need the real images and shared storage).
    """
    if cluster.existing:
        pytest.skip("needs the harness's process kubelet, which runs only on the test control plane "
                    "(USE_EXISTING_CLUSTER=1 runs pods with the cluster's own kubelets and images)")
    require(cluster, "kube-scheduler", "kube-controller-manager")
    kubelet = start_process_kubelet(cluster)
    _KUBELETS.append(kubelet)
    return kubelet


def require(cluster: Cluster, *components: str) -> None:
    """Skip the calling test unless the cluster has every named component."""
    if missing := cluster.missing(*components):
        pytest.skip(f"needs components that are not available: {', '.join(missing)} "
                    "(see docs/contributing-cluster.md)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failing cluster test, attach each component's log tail to the failure report:
    an operator test failure is often explained by an apiserver or controller log line."""
    report = yield
    if (report.failed and _ACTIVE
            and "cluster" in getattr(item, "fixturenames", ())):
        report.sections.append(("kube control plane logs (last lines)",
                                _ACTIVE[-1].log_tails(30)))
    if report.failed and _KUBELETS and "process_kubelet" in getattr(item, "fixturenames", ()):
        report.sections.append(("process pod logs (last lines)", _KUBELETS[-1].pod_log_tails()))
    return report
