{{/* Chart name, overridable. */}}
{{- define "vmsnap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; just the release name when it already contains the chart name. */}}
{{- define "vmsnap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vmsnap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vmsnap.labels" -}}
helm.sh/chart: {{ include "vmsnap.chart" . }}
app.kubernetes.io/name: {{ include "vmsnap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vmsnap
{{- end -}}

{{/* Selector labels for one component: include "vmsnap.selectorLabels" (list . "operator") */}}
{{- define "vmsnap.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "vmsnap.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "vmsnap.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "vmsnap.operatorServiceAccountName" -}}
{{- .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "vmsnap.agentServiceAccountName" -}}
{{- .Values.agent.serviceAccount.name -}}
{{- end -}}

{{/* The user name the API server gives the agent's ServiceAccount tokens (admission policies match it). */}}
{{- define "vmsnap.agentUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "vmsnap.agentServiceAccountName" .) -}}
{{- end -}}

{{- define "vmsnap.agentConfigName" -}}
{{- printf "%s-agent-config" (include "vmsnap.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The agent's config file (schema: api/agent-config.ts). */}}
{{- define "vmsnap.agentConfig" -}}
{{- $c := dict "vmRoot" .Values.agent.vmRoot "storageRoot" .Values.agent.storageRoot "socketGlobs" .Values.agent.socketGlobs "inventoryIntervalSeconds" .Values.agent.inventoryIntervalSeconds "maxConcurrentOperations" .Values.agent.maxConcurrentOperations "stallTimeoutSeconds" .Values.agent.stallTimeoutSeconds -}}
{{- if gt (int .Values.agent.maxOperationsPerNamespace) 0 -}}
{{- $_ := set $c "maxOperationsPerNamespace" .Values.agent.maxOperationsPerNamespace -}}
{{- end -}}
{{- $c | toPrettyJson -}}
{{- end -}}


{{/*
KUBERNETES_SERVICE_HOST/PORT for in-cluster clients, when apiServer.host is set. A container's
own env wins over the kubelet's (the kubernetes Service's ClusterIP, which without kube-proxy
leads off the node).
*/}}
{{- define "vmsnap.apiServerEnv" -}}
{{- if .Values.apiServer.host -}}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.apiServer.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.apiServer.port | quote }}
{{- end -}}
{{- end -}}

{{/* The user name the API server gives the operator's ServiceAccount tokens (admission policies match it). */}}
{{- define "vmsnap.operatorUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "vmsnap.operatorServiceAccountName" .) -}}
{{- end -}}
