//go:build tools

// The load comes from etcd's own benchmark tool, pinned here with the server.
package main

import _ "go.etcd.io/etcd/v3/tools/benchmark"
