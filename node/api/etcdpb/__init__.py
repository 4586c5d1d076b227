"""Generated Python code for etcd's v3 API protobufs; regenerate with ``gen_protos``.

The modules keep etcd's protobuf package names (``etcdserverpb``, ``mvccpb``, ``authpb``,
``v3lockpb``, ``v3electionpb``) so that the wire format and the gRPC method names are those
etcd clients expect.
"""
