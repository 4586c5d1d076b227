"""Generated protobuf and gRPC modules of ``proto/raftpeer.proto`` (see ``gen_protos``)."""
