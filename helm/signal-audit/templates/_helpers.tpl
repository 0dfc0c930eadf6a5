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
Which entry of .Values.database a connection uses: the entry itself, except
one with neither url nor existingSecret.name: `migrations` falls back to
`primary` (the chart's behaviour before database.migrations existed), and
`admin` to whatever `migrations` uses.
Call with (dict "root" $ "database" "migrations").
*/}}
{{- define "signal-audit.databaseEntry" -}}
{{- $db := index .root.Values.database .database }}
{{- if or $db.url $db.existingSecret.name (eq .database "primary") (eq .database "replica") }}
{{- print .database }}
{{- else if eq .database "admin" }}
{{- include "signal-audit.databaseEntry" (dict "root" .root "database" "migrations") }}
{{- else }}
{{- print "primary" }}
{{- end }}
{{- end }}

{{/*
A database URL as an env entry read from a Secret: the chart's own Secret
when the URL is given inline, otherwise the existing Secret named in the
values. Call with (dict "root" $ "name" "AUDIT_DATABASE_URL" "database" "primary").
*/}}
{{- define "signal-audit.databaseEnv" -}}
{{- $entry := include "signal-audit.databaseEntry" . }}
{{- $db := index .root.Values.database $entry }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      {{- if $db.url }}
      name: {{ include "signal-audit.databaseSecretName" .root }}
      key: {{ printf "%s-url" $entry }}
      {{- else }}
      name: {{ required (printf "database.%s: set url or existingSecret.name" $entry) $db.existingSecret.name }}
      key: {{ $db.existingSecret.key }}
      {{- end }}
{{- end }}

{{/*
The Secret holding the client CA for mutual TLS.
*/}}
{{- define "signal-audit.clientCASecret" -}}
{{- default .Values.tls.existingSecret .Values.tls.clientCA.existingSecret }}
{{- end }}

{{/*
gRPC TLS of a service: env, volume mounts and volumes (each a list for the
container's or pod's block, empty when tls.enabled is false). The Secrets are
mounted as whole directories, read-only: kubelet refreshes such mounts (not
subPath ones) when a Secret changes, and the services re-read the files.
*/}}
{{- define "signal-audit.tlsEnv" -}}
{{- $tls := .Values.tls }}
{{- if $tls.enabled }}
- name: AUDIT_TLS_CERT_FILE
  value: /etc/signal-audit/tls/tls.crt
- name: AUDIT_TLS_KEY_FILE
  value: /etc/signal-audit/tls/tls.key
- name: AUDIT_TLS_RELOAD_SECS
  value: {{ $tls.reloadSeconds | quote }}
{{- if $tls.clientCA.enabled }}
- name: AUDIT_TLS_CLIENT_CA_FILE
  value: /etc/signal-audit/tls-client-ca/{{ $tls.clientCA.key }}
- name: AUDIT_TLS_CLIENT_CERT_OPTIONAL
  value: {{ $tls.clientCA.optional | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "signal-audit.tlsVolumeMounts" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/signal-audit/tls
  readOnly: true
{{- if .Values.tls.clientCA.enabled }}
- name: tls-client-ca
  mountPath: /etc/signal-audit/tls-client-ca
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "signal-audit.tlsVolumes" -}}
{{- $tls := .Values.tls }}
{{- if $tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.enabled: set tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)" $tls.existingSecret }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- if $tls.clientCA.enabled }}
- name: tls-client-ca
  secret:
    secretName: {{ include "signal-audit.clientCASecret" . }}
    items:
      - key: {{ $tls.clientCA.key }}
        path: {{ $tls.clientCA.key }}
{{- end }}
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
Liveness/readiness probes of a service. Plaintext: kubelet's native gRPC
probe (grpc.health.v1 Check on the serving port). With tls.enabled:
tcpSocket on that port, since kubelet's gRPC probe cannot do TLS and the
image has nothing to exec (values.yaml, tls).
Call with (dict "root" $ "probe" .Values.writer.livenessProbe "port" .Values.writer.port).
*/}}
{{- define "signal-audit.grpcProbe" -}}
{{- if .root.Values.tls.enabled }}
tcpSocket:
  port: {{ .port }}
{{- else }}
grpc:
  port: {{ .port }}
  {{- with .probe.grpc.service }}
  service: {{ . | quote }}
  {{- end }}
{{- end }}
{{- with (omit .probe "grpc") }}
{{ toYaml . }}
{{- end }}
{{- end }}
