"""flotilla-node: one member of a Flotilla cluster."""

# The etcd API version clients see in Status (etcdctl prints it); Flotilla's own version
# follows after the plus sign.
__version__ = "3.5.0+flotilla.0.1.0"
