"""A local Kubernetes cluster for tests: real control plane, pods as processes.

See tests/kube/README.md. Entry point: ``python -m tests.kube.localkube up|down|status``.
"""
