#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and helm from the
# published Go modules and caches them by version outside the repository:
#   ${LTJ_CACHE:-~/.cache/ltj}/bin/k8s-v<KUBE_VERSION>-.../...
# With --node it also builds what the real node runs: kubelet and kube-proxy (same k8s.io/kubernetes
# module), CoreDNS and Rancher's local-path-provisioner (their own modules). With --kwok it also builds
# kwok, which simulates nodes and their pods (sigs.k8s.io/kwok). With --kueue it also builds the Kueue
# controller (sigs.k8s.io/kueue) into $dest/kueue-v<KUEUE_VERSION>/, beside copies of the module's CRDs
# (crds/) and webhook registrations (webhooks.yaml). The flags combine.
# Prints the directory holding the binaries on its last line. Binaries already present
# (KUBEBUILDER_ASSETS or PATH) are used when their versions match.
set -euo pipefail
node=0 kwok=0 kueue=0
for arg in "$@"; do
  case $arg in
    --node) node=1 ;;
    --kwok) kwok=1 ;;
    --kueue) kueue=1 ;;
    *) echo "usage: $0 [--node] [--kwok] [--kueue]" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${LTJ_CACHE:-$HOME/.cache/ltj}
dest="$cache/bin/k8s-v$KUBE_VERSION-etcd-v$ETCD_VERSION-helm-v$HELM_VERSION"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[build-binaries] %s\n' "$*" >&2; }

version_of() {  # version_of NAME PATH: the binary's own version output (captured: no SIGPIPE races)
  case "$1" in
    kubectl) "$2" version --client 2>/dev/null || true ;;
    coredns) "$2" -version 2>/dev/null || true ;;
    local-path-provisioner) "$2" --version 2>/dev/null || true ;;
    helm) "$2" version --short 2>/dev/null || true ;;
    *) "$2" --version 2>/dev/null || true ;;
  esac
}

have() {  # have NAME VERSION: a matching binary from KUBEBUILDER_ASSETS or PATH, copied into dest
  local name=$1 want=$2 cand out
  for cand in ${KUBEBUILDER_ASSETS:+"$KUBEBUILDER_ASSETS/$name"} "$(command -v "$name" 2>/dev/null || true)"; do
    [ -n "$cand" ] && [ -x "$cand" ] || continue
    out=$(version_of "$name" "$cand")
    if [[ "$out" =~ (^|[^0-9.])v?${want//./\.}([^0-9]|$) ]]; then
      log "using $cand ($want)"; cp "$cand" "$dest/$name"; return 0
    fi
  done
  return 1
}

mkdir -p "$dest"
start=$(date +%s)
missing_k8s=()
k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
[ "$node" -eq 1 ] && k8s_bins+=(kubelet kube-proxy)
for b in "${k8s_bins[@]}"; do
  [ -x "$dest/$b" ] || have "$b" "$KUBE_VERSION" || missing_k8s+=("$b")
done
if [ ${#missing_k8s[@]} -gt 0 ]; then
  log "building ${missing_k8s[*]} v$KUBE_VERSION from k8s.io/kubernetes (cold: ~20-40 min on 2 cores)"
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ldf+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  pkgs=()
  for b in "${missing_k8s[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$here/k8s" && go build -v -p "$(nproc)" -trimpath -ldflags "$ldf" -o "$dest/" "${pkgs[@]}" 2>&1 \
     | awk '{n++; if (n % 200 == 0) {printf "[build-binaries] compiled %d packages (last: %s)\n", n, $0; fflush()}}' >&2)
  for b in "${missing_k8s[@]}"; do [ -x "$dest/$b" ] || { log "build of $b failed"; exit 1; }; done
fi
if [ ! -x "$dest/etcd" ] && ! have etcd "$ETCD_VERSION"; then
  log "building etcd v$ETCD_VERSION"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$dest/etcd" .)
fi
if [ ! -x "$dest/helm" ] && ! have helm "$HELM_VERSION"; then
  log "building helm v$HELM_VERSION"
  # Without the k8sVersion stamps helm assumes Kubernetes v1.20 for `helm template`/`lint`.
  kminor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  hldf="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    hldf+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
  done
  GOBIN="$dest" go install -trimpath -ldflags "$hldf" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
fi
if [ "$node" -eq 1 ]; then
  # Plain module builds: neither module needs replace directives.
  if [ ! -x "$dest/coredns" ] && ! have coredns "$COREDNS_VERSION"; then
    log "building coredns v$COREDNS_VERSION (cold: ~2 min)"
    GOBIN="$dest" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION"
  fi
  if [ ! -x "$dest/local-path-provisioner" ] && ! have local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION"; then
    log "building local-path-provisioner v$LOCAL_PATH_PROVISIONER_VERSION"
    GOBIN="$dest" go install -trimpath \
      -ldflags "-s -w -X main.VERSION=v$LOCAL_PATH_PROVISIONER_VERSION" \
      "github.com/rancher/local-path-provisioner@v$LOCAL_PATH_PROVISIONER_VERSION"
  fi
fi
if [ "$kwok" -eq 1 ] && [ ! -x "$dest/kwok" ] && ! have kwok "$KWOK_VERSION"; then
  log "building kwok v$KWOK_VERSION (cold: ~3 min on 2 cores)"
  GOBIN="$dest" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
fi
kueue_dir="$dest/kueue-v$KUEUE_VERSION"
if [ "$kueue" -eq 1 ] && [ ! -x "$kueue_dir/kueue" ]; then
  log "building kueue v$KUEUE_VERSION"
  # Built and filled in a scratch directory, then renamed: the directory exists only when complete.
  tmp=$(mktemp -d "$dest/.kueue-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=v$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@v$KUEUE_VERSION"
  # The CRDs without the kustomize patches that add conversion webhooks: v1beta2 is their storage
  # version and the clients of this cluster speak only v1beta2. The webhook registrations, which
  # ltj_localcluster/kueue.py points at the controller's loopback address.
  src="$(go env GOMODCACHE)/sigs.k8s.io/kueue@v$KUEUE_VERSION/config/components"
  mkdir "$tmp/crds"
  cp "$src/crd/bases/"*.yaml "$tmp/crds/"
  cp "$src/webhook/manifests.yaml" "$tmp/webhooks.yaml"
  chmod -R u+w,go+rX "$tmp"
  rm -rf "$kueue_dir" && mv "$tmp" "$kueue_dir"
fi
log "binaries ready in $dest ($(( $(date +%s) - start ))s)"
echo "$dest"
