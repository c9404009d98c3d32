#!/usr/bin/env bash
# Builds Kubeflow's training-operator (v1, PyTorchJob controller) from its published Go module and
# caches it by version outside the repository, like hack/build-binaries.sh:
#   ${LTJ_CACHE:-~/.cache/ltj}/bin/training-operator-v<VERSION>/training-operator
# Its go.mod has no replace lines, so a plain `go install module/cmd@version` works. Also
# downloads the module source, whose manifests/base/crds/ hold the PyTorchJob CRD.
# Prints the binary's directory on the second-to-last line and the module directory on the last.
set -euo pipefail
version=${TRAINING_OPERATOR_VERSION:-1.9.2}
module=github.com/kubeflow/training-operator
cache=${LTJ_CACHE:-$HOME/.cache/ltj}
dest="$cache/bin/training-operator-v$version"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[build-training-operator] %s\n' "$*" >&2; }
mkdir -p "$dest"
if [ ! -x "$dest/training-operator" ]; then
  log "building $module/cmd/training-operator.v1@v$version (cold: several minutes on 2 cores)"
  start=$(date +%s)
  tmp=$(mktemp -d)
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$module/cmd/training-operator.v1@v$version"
  mv "$tmp/training-operator.v1" "$dest/training-operator"
  rmdir "$tmp"
  log "built in $(( $(date +%s) - start ))s"
fi
moddir=$(go mod download -json "$module@v$version" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
[ -f "$moddir/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" ] || { log "no PyTorchJob CRD in $moddir"; exit 1; }
echo "$dest"
echo "$moddir"
