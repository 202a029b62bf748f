// Command etcd is go.etcd.io/etcd/server/v3's main.go (Copyright The etcd
// Authors, Apache License 2.0): etcd's own go.mod has replace directives, so
// `go install` of it is refused; this wrapper module requires the tagged server
// module instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
