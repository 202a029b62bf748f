"""A real Kubernetes control plane for the test suite.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake GPU nodes) are built
from their Go modules by ``build.sh`` and started on loopback ports by ``harness.ControlPlane``;
``fixtures`` is the pytest plugin that exposes them. See docs/contributing-cluster.md.
"""
