{{/*
The operator's permissions, derived from the API calls in operator/ltj_operator and kopf itself
(tests/integration/test_chart.py fails on any rule the code does not use).

Rules on namespaced resources: a ClusterRole (all namespaces) or a Role per watched namespace.
The lightningtrainingjobs/status "get" rule is also what lets the operator create each job's relay
Role without the `escalate` verb: RBAC only lets a user create a Role granting permissions the user
holds.
*/}}
{{- define "ltj-operator.namespacedRules" -}}
# The jobs: watched (kopf event handlers, no finalizers), read, deleted after ttlSecondsAfterFinished.
- apiGroups: ["ltj.dev"]
  resources: ["lightningtrainingjobs"]
  verbs: ["get", "list", "watch", "delete"]
# Phase and conditions. "get" is not called: it is what the relay's Role grants (see above).
- apiGroups: ["ltj.dev"]
  resources: ["lightningtrainingjobs/status"]
  verbs: ["get", "patch"]
# Children carry blockOwnerDeletion: the OwnerReferencesPermissionEnforcement admission plugin
# (OpenShift) allows that only to who may update the owner's finalizers.
- apiGroups: ["ltj.dev"]
  resources: ["lightningtrainingjobs/finalizers"]
  verbs: ["update"]
# The gang: watched for status, created per rank, deleted on gang restart, suspend and cleanup.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "get", "list", "watch", "delete"]
# The output claim of a volumeClaimTemplate; its access modes are read for the RWX check.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["create", "get"]
# The headless Service, the relay's ServiceAccount, Role and RoleBinding, and the ranks' token-less
# ServiceAccount (create-if-absent; "get" reads the owner of an object already there, which the job
# uses only if it controls it).
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["create", "get"]
# The relay's token Secret of a job whose pods run as an account the user names (the token controller
# fills it; the operator never reads it). No more than the pods rule gives: whoever creates pods may
# run them as any account and mount any Secret.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "get"]
{{- if .Values.networkPolicy.enabled }}
# Each job's NetworkPolicy (create-if-absent, as above), only where the operator makes them.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "get"]
{{- end }}
# Kubernetes Events on job transitions (kopf posts core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Kueue, where installed: the Workload of each job labelled kueue.x-k8s.io/queue-name (create-if-absent;
# "get" reads it each pass, and the owner of one already there), watched for Kueue's admission, marked
# Finished on its status when the job ends and its admission cleared there after an eviction, once the
# job's pods are gone (garbage collection deletes it with the job).
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["create", "get", "list", "watch"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads/status"]
  verbs: ["patch"]
{{- end }}

{{/*
Cluster-scoped reads of kopf: it watches CRDs to notice the job CRD being (re)installed (and Kueue's,
to watch Workloads once Kueue is installed), and, when it serves a list of namespaces, watches
namespaces to notice them being created or deleted. And of the operator, for a queued job: the
ResourceFlavors of its admission (their node labels and tolerations go on its pods), and the priority
class its Workload is created with (a WorkloadPriorityClass named by its kueue.x-k8s.io/priority-class
label, the PriorityClass its pods name, else the global default one, listed).
*/}}
{{- define "ltj-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["resourceflavors", "workloadpriorityclasses"]
  verbs: ["get"]
- apiGroups: ["scheduling.k8s.io"]
  resources: ["priorityclasses"]
  verbs: ["get", "list"]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
