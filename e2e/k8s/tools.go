//go:build tools

// Package tools pins the Kubernetes commands build.sh compiles, so `go mod tidy` keeps their
// dependencies in go.mod/go.sum. Never compiled (build tag `tools`).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
