{{/*
The binding of one of the chart's ValidatingAdmissionPolicies, named like it; pass a dict with "ctx"
(the root context) and "name". Both policies apply where admissionPolicy.namespaceSelector says.
*/}}
{{- define "ltj-operator.admissionPolicyBinding" -}}
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ .name }}
  labels:
    {{- include "ltj-operator.labels" (dict "ctx" .ctx "component" "admission") | nindent 4 }}
spec:
  policyName: {{ .name }}
  validationActions: {{ toJson .ctx.Values.admissionPolicy.validationActions }}
  matchResources:
    namespaceSelector: {{ toJson .ctx.Values.admissionPolicy.namespaceSelector }}
{{- end }}
