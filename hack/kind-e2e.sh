#!/usr/bin/env bash
# End to end on kind: a real Kubernetes (kubelet, containerd, CNI) running the real images.
#
#   1. creates a kind cluster (one control plane + two workers, so the 2-node sample can span nodes);
#   2. builds ltj-trainer and ltj-operator with `docker build` and loads them into the workers;
#   3. makes the ReadWriteMany storage class `ltj-local` the samples use (see "Shared volume" below);
#   4. installs the Helm chart (charts/ltj-operator) cluster-wide;
#   5. applies crds/samples/cpu-digits-2node.yaml unchanged and waits for phase Succeeded with
#      status.training filled.
# With --setup-only it stops after step 3, keeps the cluster and writes <artifacts>/cluster.json
# (kubeconfig, images, tools) for the e2e tier (tests/e2e, the kind param), which installs the chart itself.
#
# Shared volume: every kind node is a container on this host, so the script bind-mounts one host
# directory into every node (kind extraMounts, at /ltj-shared) and points kind's own
# local-path-provisioner at it (sharedFileSystemPath): claims of any access mode, ReadWriteMany
# included, get a directory there that pods on every node see, which is what an NFS or CephFS class
# gives on a real cluster. Checkpoints and events.jsonl end up in <artifacts>/volume on the host.
#
# Usage: hack/kind-e2e.sh [--keep-cluster] [--setup-only] [--name NAME] [--timeout SECONDS]
#                         [--artifacts DIR] [--node-image IMAGE] [--skip-build]
# Exit codes: 0 success, 1 failure (diagnostics in the artifacts dir), 2 usage, 3 no Docker engine.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
KIND_VERSION=${KIND_VERSION:-0.33.0}
cache=${LTJ_CACHE:-$HOME/.cache/ltj}

keep=0
setup_only=0
name=${LTJ_KIND_CLUSTER:-ltj-e2e}
timeout=${LTJ_KIND_TIMEOUT:-1500}
artifacts=${LTJ_KIND_ARTIFACTS:-$repo/.run/kind-e2e}
node_image=${LTJ_KIND_NODE_IMAGE:-}
build=1
tag=e2e
release=ltj
operator_ns=ltj-system
job_ns=ltj-e2e
sample=$repo/crds/samples/cpu-digits-2node.yaml
crd=$repo/crds/ltj.dev_lightningtrainingjobs.yaml

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --keep-cluster) keep=1 ;;
    --setup-only) setup_only=1; keep=1 ;;
    --name) name=$2; shift ;;
    --timeout) timeout=$2; shift ;;
    --artifacts) artifacts=$2; shift ;;
    --node-image) node_image=$2; shift ;;
    --skip-build) build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[kind-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

if ! docker info >/dev/null 2>&1; then
  log "no Docker engine (docker info failed): kind needs one"
  exit 3
fi

# --- tools: kind, kubectl, helm (PATH first, then the cache, then built with Go) ---------------
tool_dir=$cache/bin/kind-v$KIND_VERSION
k8s_dir=$cache/bin/k8s-v$KUBE_VERSION-etcd-v$ETCD_VERSION-helm-v$HELM_VERSION
if command -v kind >/dev/null && kind version 2>/dev/null | grep -q "v$KIND_VERSION "; then
  kind=$(command -v kind)
else
  kind=$tool_dir/kind
  if [ ! -x "$kind" ]; then
    log "installing kind v$KIND_VERSION into $tool_dir (go install)"
    mkdir -p "$tool_dir"
    GOBIN=$tool_dir go install "sigs.k8s.io/kind@v$KIND_VERSION"
  fi
fi
if command -v kubectl >/dev/null; then kubectl=$(command -v kubectl)
elif [ -x "$k8s_dir/kubectl" ]; then kubectl=$k8s_dir/kubectl
else kubectl="$(bash "$here/build-binaries.sh" | tail -n1)/kubectl"
fi
if command -v helm >/dev/null && helm version --short 2>/dev/null | grep -q '^v3\.'; then helm=$(command -v helm)
elif [ -x "$k8s_dir/helm" ]; then helm=$k8s_dir/helm
else
  log "installing helm v$HELM_VERSION (go install)"
  mkdir -p "$k8s_dir"
  GOBIN=$k8s_dir go install "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  helm=$k8s_dir/helm
fi
log "kind: $kind ($("$kind" version)); kubectl: $kubectl; helm: $helm"

[ -f "$crd" ] || die "missing $crd"
[ -f "$sample" ] || die "missing $sample"

# --- cluster ---------------------------------------------------------------------------------
mkdir -p "$artifacts"
artifacts=$(cd "$artifacts" && pwd)
volume=$artifacts/volume
rm -rf "$volume" || die "cannot remove the last run's $volume (files of the trainer's uid 1000): remove it as root"
mkdir -p "$volume"
# The trainer runs as a non-root user; the kubelet creates each job's subPath with this mode.
chmod 0777 "$volume"
kubeconfig=$artifacts/kubeconfig
export KUBECONFIG=$kubeconfig
k() { "$kubectl" "$@"; }

cleanup() {
  rc=$?
  if [ "$rc" -ne 0 ]; then diagnostics || true; fi
  if [ "$keep" -eq 1 ]; then
    log "keeping cluster $name: export KUBECONFIG=$kubeconfig; delete with: $kind delete cluster --name $name"
  else
    log "deleting cluster $name"
    "$kind" delete cluster --name "$name" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

diagnostics() {
  log "collecting diagnostics into $artifacts"
  {
    k get nodes -o wide
    k get ltj,pods,svc,pvc,cm,sa,role,rolebinding -n "$job_ns" -o wide
    k get pv -o wide
    k describe ltj -n "$job_ns"
    k get ltj -n "$job_ns" -o yaml
    k describe pods -n "$job_ns"
    k get events -n "$job_ns" --sort-by=.lastTimestamp
    k get pods -n "$operator_ns" -o wide
  } >"$artifacts/cluster-state.txt" 2>&1 || true
  k logs -n "$operator_ns" deploy/"$release"-ltj-operator --all-containers >"$artifacts/operator.log" 2>&1 || true
  for pod in $(k get pods -n "$job_ns" -o name 2>/dev/null); do
    k logs -n "$job_ns" "$pod" --all-containers --prefix >"$artifacts/$(basename "$pod").log" 2>&1 || true
  done
  "$kind" export logs "$artifacts/kind-logs" --name "$name" >/dev/null 2>&1 || true
  tail -n 60 "$artifacts/cluster-state.txt" >&2 || true
  tail -n 40 "$artifacts/operator.log" >&2 || true
}

if "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
  log "deleting the leftover cluster $name"
  "$kind" delete cluster --name "$name"
fi
cat >"$artifacts/kind-config.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraMounts: [{hostPath: "$volume", containerPath: /ltj-shared}]
  - role: worker
    extraMounts: [{hostPath: "$volume", containerPath: /ltj-shared}]
  - role: worker
    extraMounts: [{hostPath: "$volume", containerPath: /ltj-shared}]
EOF
trap cleanup EXIT
log "creating kind cluster $name"
"$kind" create cluster --name "$name" --config "$artifacts/kind-config.yaml" --kubeconfig "$kubeconfig" \
  --wait 180s ${node_image:+--image "$node_image"}
k version

# --- images ----------------------------------------------------------------------------------
if [ "$build" -eq 1 ]; then
  log "building ltj-trainer:$tag and ltj-operator:$tag"
  docker build -f "$repo/trainer_image/Dockerfile" -t "ltj-trainer:$tag" "$repo"
  docker build -f "$repo/operator/Dockerfile" -t "ltj-operator:$tag" "$repo"
fi
# Training pods run on the workers only (the control plane is tainted); the operator too, so the
# (large) images are not copied onto the control-plane node.
log "loading the images into the workers of $name"
"$kind" load docker-image --name "$name" --nodes "$name-worker,$name-worker2" "ltj-trainer:$tag" "ltj-operator:$tag"

# --- the shared RWX storage class --------------------------------------------------------------
log "pointing kind's local-path-provisioner at the shared directory (class ltj-local)"
k -n local-path-storage patch configmap local-path-config --type merge \
  -p '{"data":{"config.json":"{\"sharedFileSystemPath\":\"/ltj-shared\"}"}}'
k -n local-path-storage rollout restart deployment/local-path-provisioner
k -n local-path-storage rollout status deployment/local-path-provisioner --timeout=180s
k apply -f - <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ltj-local
provisioner: rancher.io/local-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF

if [ "$setup_only" -eq 1 ]; then
  python3 - "$artifacts/cluster.json" <<EOF
import json, sys
json.dump({"name": "$name", "kubeconfig": "$kubeconfig", "kind": "$kind", "helm": "$helm",
           "bin_dir": "$(dirname "$kubectl")", "operator_image": "ltj-operator:$tag",
           "trainer_image": "ltj-trainer:$tag", "volume": "$volume", "node_volume": "/ltj-shared"},
          open(sys.argv[1], "w"), indent=1)
EOF
  log "cluster $name ready for the e2e tests ($artifacts/cluster.json); delete with: $kind delete cluster --name $name"
  exit 0
fi

# --- operator --------------------------------------------------------------------------------
log "installing the chart (release $release in $operator_ns)"
"$helm" upgrade --install "$release" "$repo/charts/ltj-operator" --namespace "$operator_ns" --create-namespace \
  --set image.repository=ltj-operator --set image.tag="$tag" --set image.pullPolicy=Never \
  --set defaultTrainerImage="ltj-trainer:$tag" --set relayImagePullPolicy=Never --set logLevel=DEBUG \
  --wait --timeout 5m
k -n "$operator_ns" rollout status deploy/"$release"-ltj-operator --timeout=180s
k wait --for=condition=Established --timeout=60s crd/lightningtrainingjobs.ltj.dev

# --- the job -----------------------------------------------------------------------------------
k create namespace "$job_ns"
job=$(sed -n 's/^  name: //p' "$sample" | head -n1)
log "applying job $job (2 nodes, CPU) in $job_ns, as users apply it"
k apply -n "$job_ns" -f "$sample"

# --- wait for the result -----------------------------------------------------------------------
deadline=$(( $(date +%s) + timeout ))
phase=""
while :; do
  phase=$(k get ltj "$job" -n "$job_ns" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  k get ltj "$job" -n "$job_ns" --no-headers 2>/dev/null | sed 's/^/  /' >&2 || true
  # Where the ranks ran (kept from the last look that saw pods: cleanup may delete them at the end).
  pods=$(k get pods -n "$job_ns" -l "ltj.dev/job-name=$job,app.kubernetes.io/component=trainer" -o json 2>/dev/null || true)
  if [ -n "$pods" ] && [ "$(printf '%s' "$pods" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" != 0 ]; then
    printf '%s\n' "$pods" >"$artifacts/pods.json"
  fi
  case $phase in Succeeded|Failed) break ;; esac
  [ "$(date +%s)" -lt "$deadline" ] || die "job $job not finished after ${timeout}s (phase: ${phase:-none})"
  sleep 10
done
k get ltj "$job" -n "$job_ns" -o json >"$artifacts/job-final.json"
k get ltj -n "$job_ns" -o wide
[ "$phase" = Succeeded ] || die "job $job ended $phase"

# The training part of the status comes from the relay: it must hold the finished run.
python3 - "$artifacts/job-final.json" <<'EOF'
import json, sys
status = json.load(open(sys.argv[1]))["status"]
tr = status.get("training") or {}
problems = []
if tr.get("finished") is not True: problems.append("training.finished is not true")
if not str(tr.get("bestCheckpoint", "")).endswith(".ckpt"): problems.append("no training.bestCheckpoint")
if not isinstance(tr.get("bestScore"), (int, float)): problems.append("no training.bestScore")
if not str(tr.get("lastCheckpoint", "")).endswith(".ckpt"): problems.append("no training.lastCheckpoint")
if tr.get("epoch") is None: problems.append("no training.epoch")
if not tr.get("metrics"): problems.append("no training.metrics")
if not (tr.get("testMetrics") or {}): problems.append("no training.testMetrics")
conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
if conds.get("Succeeded") != "True": problems.append(f"condition Succeeded is {conds.get('Succeeded')}")
if problems:
    print("status.training incomplete: " + "; ".join(problems), file=sys.stderr)
    print(json.dumps(status, indent=1)[:6000], file=sys.stderr)
    sys.exit(1)
print(f"training: epoch {tr['epoch']}, best {tr['bestScore']} at {tr['bestCheckpoint']}, test {tr['testMetrics']}")
EOF
# The pods ran on both workers' shared volume: the checkpoints are on the host.
ls -R "$volume" | head -n 40 >&2
find "$volume" -name '*.ckpt' | grep -q . || die "no checkpoint files on the shared volume $volume"
log "PASSED: $job Succeeded on kind with status.training filled (artifacts: $artifacts)"
