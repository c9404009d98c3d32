{{/* Chart name, overridable. DNS labels are at most 63 characters. */}}
{{- define "ltj-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of the release's objects: <release>-<chart>, or just <release> when the release
name already contains the chart name (helm install ltj-operator ...).
*/}}
{{- define "ltj-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* helm.sh/chart label value: <chart>-<version>, '+' is not allowed in label values. */}}
{{- define "ltj-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "ltj-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ltj-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels on every object; pass a dict with "ctx" (the root context) and "component". */}}
{{- define "ltj-operator.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ include "ltj-operator.chart" $ctx }}
{{ include "ltj-operator.selectorLabels" $ctx }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: ltj
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "ltj-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ltj-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "ltj-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Default trainer image for jobs without spec.image. */}}
{{- define "ltj-operator.defaultTrainerImage" -}}
{{- default (printf "ltj-trainer:%s" .Chart.AppVersion) .Values.defaultTrainerImage }}
{{- end }}

{{/* Names of the training pods' default pull secrets, comma-separated as the operator reads them. */}}
{{- define "ltj-operator.defaultImagePullSecrets" -}}
{{- $names := list }}
{{- range .Values.defaultImagePullSecrets }}{{ $names = append $names .name }}{{ end }}
{{- join "," $names }}
{{- end }}

{{/* Image of the relay sidecar: the operator image unless overridden. */}}
{{- define "ltj-operator.relayImage" -}}
{{- default (include "ltj-operator.image" .) .Values.relayImage }}
{{- end }}

{{/* kopf's namespace flags: every watched namespace, or all of them. */}}
{{- define "ltj-operator.namespaceArgs" -}}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
{{- end }}
