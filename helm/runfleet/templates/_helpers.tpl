{{/* Labels on every object the chart renders. */}}
{{- define "runfleet.labels" -}}
app.kubernetes.io/part-of: runfleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "runfleet.runfleetdLabels" -}}
app.kubernetes.io/name: runfleetd
{{ include "runfleet.labels" . }}
{{- end -}}

{{- define "runfleet.selector" -}}
app.kubernetes.io/name: runfleetd
{{- end -}}

{{/* <registry>/<repository>:<tag>; the registry is required. */}}
{{- define "runfleet.image" -}}
{{- $registry := required "set registry (e.g. --set registry=123456789012.dkr.ecr.us-west-2.amazonaws.com)" .Values.registry -}}
{{- printf "%s/%s:%s" $registry .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* runfleetd.yaml: .Values.config with templates in its strings expanded. */}}
{{- define "runfleet.config" -}}
{{- $_ := required "set registry (e.g. --set registry=123456789012.dkr.ecr.us-west-2.amazonaws.com)" .Values.registry -}}
{{- tpl (toYaml .Values.config) . -}}
{{- end -}}

{{- define "runfleet.runnerNamespace" -}}
{{- .Values.config.backend.kubernetes.namespace | default .Values.runnerNamespace.name -}}
{{- end -}}
