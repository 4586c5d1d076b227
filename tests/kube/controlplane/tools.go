//go:build tools

// Package controlplane pins the Kubernetes control-plane commands built for
// the local test cluster. The blank imports keep `go mod tidy` from dropping
// the requirement on k8s.io/kubernetes; the build tag keeps the file out of
// every real build (main packages cannot be imported).
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
