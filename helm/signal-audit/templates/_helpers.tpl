{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names.
*/}}
{{- define "signal-audit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name. Suffixes (-writer-headless, -database, ...) are
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
What tells the two services apart; every per-service template ranges over
this map, so writer and reader objects come from one definition.
  binary       the executable, OTEL_SERVICE_NAME and the scrape job's name
  listenEnv    the variable holding the gRPC listen address
  database     which entry of .Values.database it connects to
  databaseEnv  the variable holding that URL
  grpcService  the gRPC service the readiness probe and `helm test` ask about
*/}}
{{- define "signal-audit.components" -}}
writer:
  binary: audit-writer
  listenEnv: AUDIT_WRITER_LISTEN
  database: primary
  databaseEnv: AUDIT_DATABASE_URL
  grpcService: signal_audit.v1.SignalWriterService
reader:
  binary: audit-reader
  listenEnv: AUDIT_READER_LISTEN
  database: replica
  databaseEnv: AUDIT_REPLICA_URL
  grpcService: signal_audit.v1.SignalReaderService
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
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
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
The `annotations:` block of an object's metadata (indented for it, or
nothing at all): commonAnnotations plus the object's own, which win.
Call as {{- include "signal-audit.annotations" (dict "root" $ "extra" $map) }}
right after the labels.
*/}}
{{- define "signal-audit.annotations" -}}
{{- with merge (dict) (.extra | default dict) .root.Values.commonAnnotations }}
{{- printf "annotations:\n%s" (toYaml . | indent 2) | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is given, else
repository:tag (tag defaulting to the chart's appVersion).
Call with (dict "root" $ "image" .Values.writer.image).
*/}}
{{- define "signal-audit.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret the chart creates for inline database URLs.
*/}}
{{- define "signal-audit.databaseSecretName" -}}
{{- include "signal-audit.fullname" . }}-database
{{- end }}

{{/*
A database URL as an env entry read from a Secret: the chart's own Secret
when the URL is given inline, otherwise the existing Secret named in the
values. Call with (dict "root" $ "name" "AUDIT_DATABASE_URL" "database" "primary").
*/}}
{{- define "signal-audit.databaseEnv" -}}
{{- $db := index .root.Values.database .database }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      {{- if $db.url }}
      name: {{ include "signal-audit.databaseSecretName" .root }}
      key: {{ printf "%s-url" .database }}
      {{- else }}
      name: {{ required (printf "database.%s: set url or existingSecret.name" .database) $db.existingSecret.name }}
      key: {{ $db.existingSecret.key }}
      {{- end }}
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
The ServiceAccount pods run as; empty means the namespace's default.
*/}}
{{- define "signal-audit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "signal-audit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every pod of the chart (services, migration
Job, test). The pods never call the Kubernetes API: no token is mounted.
Call with (dict "root" $), or (dict "root" $ "hook" true) for a pod of a
pre-install hook: a ServiceAccount the chart creates does not exist yet when
that runs, so such a pod keeps the namespace's default one.
*/}}
{{- define "signal-audit.podCommon" -}}
{{- $values := .root.Values -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $values.podSecurityContext | nindent 2 }}
{{- if not (and .hook $values.serviceAccount.create) }}
{{- with (include "signal-audit.serviceAccountName" .root) }}
serviceAccountName: {{ . }}
{{- end }}
{{- end }}
{{- with $values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Scheduling settings of a component's pods (also used by the migration Job
with the writer's values). Call with the component's values.
*/}}
{{- define "signal-audit.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
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
