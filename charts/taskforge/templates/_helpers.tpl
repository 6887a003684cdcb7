{{/*
Names and labels follow `helm create`; every deployable adds app.kubernetes.io/component.
*/}}

{{/*
Expand the name of the chart.
*/}}
{{- define "taskforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "taskforge.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "taskforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "taskforge.labels" -}}
helm.sh/chart: {{ include "taskforge.chart" . }}
{{ include "taskforge.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskforge
{{- end }}

{{/*
Selector labels
*/}}
{{- define "taskforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one deployable. Call with (dict "root" $ "component" "worker").
*/}}
{{- define "taskforge.componentLabels" -}}
{{ include "taskforge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one deployable. Call with (dict "root" $ "component" "worker").
*/}}
{{- define "taskforge.componentSelectorLabels" -}}
{{ include "taskforge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of one deployable's resources: <fullname>-<component>. Call with (dict "root" $ "component" "worker").
*/}}
{{- define "taskforge.componentName" -}}
{{- printf "%s-%s" (include "taskforge.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{/*
The image reference; a digest pins it.
*/}}
{{- define "taskforge.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of api, scheduler, worker, reaper.
*/}}
{{- define "taskforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "taskforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Secret holding TASKFORGE_API_TOKENS ("" when the api runs without tokens).
*/}}
{{- define "taskforge.apiTokensSecretName" -}}
{{- if .Values.apiTokens.existingSecret }}
{{- .Values.apiTokens.existingSecret }}
{{- else if .Values.apiTokens.digests }}
{{- printf "%s-api-tokens" (include "taskforge.fullname" .) }}
{{- end }}
{{- end }}

{{/*
"true" when something other than worker.replicas decides the worker count.
*/}}
{{- define "taskforge.workerAutoscaled" -}}
{{- if ne .Values.worker.autoscaling.mode "none" }}true{{ end }}
{{- end }}

{{/*
"true" when the operator is deployed.
*/}}
{{- define "taskforge.operatorEnabled" -}}
{{- if or .Values.operator.enabled (eq .Values.worker.autoscaling.mode "operator") }}true{{ end }}
{{- end }}

{{/*
The queue whose backlog scales the workers.
*/}}
{{- define "taskforge.autoscalingQueue" -}}
{{- .Values.worker.autoscaling.queue | default (first .Values.worker.queues) }}
{{- end }}

{{/*
Pod-level settings shared by every pod. Call with the root context.
*/}}
{{- define "taskforge.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
Pod annotations and labels shared by every pod: (dict "root" $ "component" "worker").
Pods of long-running deployables (not the migration Job) carry taskforge.io/metrics, which the
metrics Service selects.
*/}}
{{- define "taskforge.podMetadata" -}}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
labels:
  {{- include "taskforge.componentLabels" . | nindent 2 }}
  {{- if ne .component "migration" }}
  taskforge.io/metrics: "true"
  {{- end }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
Where one deployable's pods may run. Call with the deployable's values block.
*/}}
{{- define "taskforge.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Image, security context and the writable /tmp of every container. Call with the root context.
*/}}
{{- define "taskforge.containerCommon" -}}
image: {{ include "taskforge.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/*
The emptyDir behind /tmp: the root filesystem is read-only.
*/}}
{{- define "taskforge.volumes" -}}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.tmp.sizeLimit }}
{{- end }}

{{/*
The ops port every deployable serves /healthz, /readyz and /metrics on.
*/}}
{{- define "taskforge.opsPort" -}}
- name: metrics
  containerPort: 9090
  protocol: TCP
{{- end }}

{{/*
Liveness (/healthz) and, unless readiness=false, readiness (/readyz) on the ops port.
Call with (dict "root" $ "readiness" true).
*/}}
{{- define "taskforge.probes" -}}
{{- $liveness := .root.Values.probes.liveness }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  initialDelaySeconds: {{ $liveness.initialDelaySeconds }}
  periodSeconds: {{ $liveness.periodSeconds }}
  timeoutSeconds: {{ $liveness.timeoutSeconds }}
  failureThreshold: {{ $liveness.failureThreshold }}
{{- if .readiness }}
{{- $readiness := .root.Values.probes.readiness }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  initialDelaySeconds: {{ $readiness.initialDelaySeconds }}
  periodSeconds: {{ $readiness.periodSeconds }}
  timeoutSeconds: {{ $readiness.timeoutSeconds }}
  failureThreshold: {{ $readiness.failureThreshold }}
{{- end }}
{{- end }}

{{/*
Environment of one container.
Call with (dict "root" $ "component" "worker" "values" .Values.worker "env" (dict ...)
"postgres" true "redis" true "apiTokens" false): each deployable gets only the Secrets it uses.
Plain variables are merged in this order, later wins: the chart's shared settings, the component's
own settings ("env"), config.extraEnv, then the deployable's `env` values - so a user can override
anything the chart sets. Secret-backed variables come first and cannot be shadowed by accident.
*/}}
{{- define "taskforge.env" -}}
{{- $root := .root }}
{{- $values := .root.Values }}
{{- $plain := dict
  "TASKFORGE_OPS_PORT" "9090"
  "TASKFORGE_LOG_LEVEL" $values.config.logLevel
  "TASKFORGE_LOG_FORMAT" $values.config.logFormat
  "TASKFORGE_MAX_ATTEMPTS" $values.config.maxAttempts
  "TASKFORGE_JOB_TIMEOUT" $values.config.jobTimeout
  "TASKFORGE_VISIBILITY_TIMEOUT" $values.config.visibilityTimeout
  "OTEL_SERVICE_NAME" (printf "%s-%s" $values.telemetry.serviceNamePrefix .component)
  "OTEL_RESOURCE_ATTRIBUTES" "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"
}}
{{- with $values.telemetry.otlpEndpoint }}
{{- $_ := set $plain "OTEL_EXPORTER_OTLP_ENDPOINT" . }}
{{- end }}
{{- $plain = mergeOverwrite $plain (.env | default dict) ($values.config.extraEnv | default dict) (.values.env | default dict) }}
{{- range $reserved := list "POD_NAME" "POD_NAMESPACE" "TASKFORGE_POSTGRES_URL" "TASKFORGE_REDIS_URL" "TASKFORGE_API_TOKENS" }}
{{- if hasKey $plain $reserved }}
{{- fail (printf "%s is set by the chart (from a Secret or the pod itself); use the postgres, redis or apiTokens values instead of env" $reserved) }}
{{- end }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .postgres }}
- name: TASKFORGE_POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ $values.postgres.existingSecret }}
      key: {{ $values.postgres.secretKey }}
{{- end }}
{{- if .redis }}
- name: TASKFORGE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $values.redis.existingSecret }}
      key: {{ $values.redis.secretKey }}
{{- end }}
{{- if and .apiTokens (include "taskforge.apiTokensSecretName" $root) }}
- name: TASKFORGE_API_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ include "taskforge.apiTokensSecretName" $root }}
      key: {{ $values.apiTokens.secretKey }}
{{- end }}
{{- range $name, $value := $plain }}
- name: {{ $name }}
  value: {{ include "taskforge.envValue" $value | quote }}
{{- end }}
{{- end }}

{{/*
A value as environment text. Numbers from values files arrive as float64, which Go prints as
1e+06: whole numbers are printed as integers, so TASKFORGE_WORKER_CONCURRENCY=1000000 parses.
*/}}
{{- define "taskforge.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}
