"""The node's client-facing API: the etcd v3 gRPC surface."""
