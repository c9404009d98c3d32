#!/usr/bin/env bash
# Regenerates hack/k8s/go.mod's replace block for KUBE_VERSION (hack/versions.env): every staging
# module that k8s.io/kubernetes requires at exactly v0.0.0 maps to its published v0.<minor>.<patch>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
gomod=$(go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@v$KUBE_VERSION")
cd "$here/k8s"
{
  sed '/^replace (/,$d' go.mod
  echo "replace ("
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v m="${KUBE_VERSION#1.}" '{print "\t"$1" => "$1" v0."m}'
  echo ")"
} > go.mod.new
mv go.mod.new go.mod
go get "k8s.io/kubernetes@v$KUBE_VERSION"
go mod tidy
