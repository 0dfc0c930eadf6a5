{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names.
*/}}
{{- define "signal-audit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name. Component names (writer, reader, migrate) are
appended to it, so it is kept to 52 characters.
*/}}
{{- define "signal-audit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "signal-audit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. Call with (dict "root" $ "component" "writer").
*/}}
{{- define "signal-audit.labels" -}}
helm.sh/chart: {{ include "signal-audit.chart" .root }}
{{ include "signal-audit.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: signal-audit
{{- end }}

{{/*
Labels that select a component's pods; never change them on upgrade.
*/}}
{{- define "signal-audit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signal-audit.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Image reference. Call with (dict "root" $ "image" .Values.writer.image).
*/}}
{{- define "signal-audit.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
A database URL taken from the chart's Secret.
Call with (dict "root" $ "name" "AUDIT_DATABASE_URL" "key" .Values.database.primaryUrlKey).
*/}}
{{- define "signal-audit.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "database.secretName is required" .root.Values.database.secretName }}
      key: {{ .key }}
{{- end }}

{{/*
Environment shared by both services and the migration Job.
Call with (dict "root" $ "serviceName" "audit-writer").
*/}}
{{- define "signal-audit.commonEnv" -}}
- name: RUST_LOG
  value: {{ .root.Values.logLevel | quote }}
- name: AUDIT_LOG_JSON
  value: {{ .root.Values.logJson | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
{{- with .root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every pod of the chart.
*/}}
{{- define "signal-audit.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
gRPC liveness/readiness probes (grpc.health.v1 over the serving port).
Call with (dict "probe" .Values.writer.livenessProbe "port" .Values.writer.port).
*/}}
{{- define "signal-audit.grpcProbe" -}}
grpc:
  port: {{ .port }}
  {{- with .probe.grpc.service }}
  service: {{ . | quote }}
  {{- end }}
{{- with (omit .probe "grpc") }}
{{ toYaml . }}
{{- end }}
{{- end }}
