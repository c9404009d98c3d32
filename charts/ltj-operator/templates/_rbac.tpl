{{/*
The operator's permissions, derived from the API calls in operator/ltj_operator and kopf itself
(tests/integration/test_chart.py fails on any rule the code does not use).

Rules on namespaced resources: a ClusterRole (all namespaces) or a Role per watched namespace.
The lightningtrainingjobs and lightningtrainingjobs/status "get" rules are also what lets the
operator create each job's relay Role without the `escalate` verb: RBAC only lets a user create a
Role granting permissions the user holds.
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
# The headless Service and the relay's ServiceAccount, Role and RoleBinding (create-if-absent).
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create"]
# Kubernetes Events on job transitions (kopf posts core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Cluster-scoped reads of kopf: it watches CRDs to notice the job CRD being (re)installed, and, when
it serves a list of namespaces, watches namespaces to notice them being created or deleted.
*/}}
{{- define "ltj-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
