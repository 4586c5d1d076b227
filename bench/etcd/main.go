// Command etcd is the etcd server built from its published Go modules, so the benchmark can
// run the same release everywhere without downloading a release binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
