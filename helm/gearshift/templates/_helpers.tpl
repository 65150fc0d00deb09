{{/*
Names and labels follow the conventions of well-kept charts: `<release>-<chart>` as the
prefix (or the release name alone when it already contains the chart name), truncated
to 63 characters because some Kubernetes name fields are limited to that.
*/}}

{{- define "gearshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gearshift.fullname" -}}
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

{{- define "gearshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of one component's objects: `<fullname>-<component>` (component names are short). */}}
{{- define "gearshift.componentName" -}}
{{- $fullname := include "gearshift.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-" }}
{{- printf "%s-%s" $fullname .component }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "gearshift.labels" -}}
helm.sh/chart: {{ include "gearshift.chart" . }}
{{ include "gearshift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gearshift
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gearshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gearshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: call with (dict "root" $ "component" "router"). */}}
{{- define "gearshift.componentLabels" -}}
{{ include "gearshift.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gearshift.componentSelectorLabels" -}}
{{ include "gearshift.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount name of a component. */}}
{{- define "gearshift.serviceAccountName" -}}
{{- $values := index .root.Values .component }}
{{- if $values.serviceAccount.create }}
{{- default (include "gearshift.componentName" .) $values.serviceAccount.name }}
{{- else }}
{{- default "default" $values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ServiceAccount of the operator-created model-server pods. */}}
{{- define "gearshift.modelServerServiceAccount" -}}
{{- default (include "gearshift.componentName" (dict "root" . "component" "model-server")) .Values.modelServers.serviceAccount.name }}
{{- end }}

{{/* Image tag: the component's, else the global one, else the chart's appVersion. */}}
{{- define "gearshift.imageTag" -}}
{{- $values := index .root.Values .component }}
{{- $values.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/*
Full CPU image reference of a component. A digest pins it (immutable): the component's
own `image.digest`, else the global `image.digest` when the component overrides neither
repository nor tag; otherwise the tag.
*/}}
{{- define "gearshift.image" -}}
{{- $values := index .root.Values .component }}
{{- $repository := $values.image.repository | default .root.Values.image.repository }}
{{- if $values.image.digest }}
{{- printf "%s@%s" $repository $values.image.digest }}
{{- else if and .root.Values.image.digest (not $values.image.repository) (not $values.image.tag) }}
{{- printf "%s@%s" $repository .root.Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (include "gearshift.imageTag" .) }}
{{- end }}
{{- end }}

{{/* GPU (model-server) image reference, handed to the operator; `image.gpuDigest` pins it. */}}
{{- define "gearshift.gpuImage" -}}
{{- if .Values.image.gpuDigest }}
{{- printf "%s@%s" .Values.image.gpuRepository .Values.image.gpuDigest }}
{{- else }}
{{- printf "%s:%s" .Values.image.gpuRepository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* CPU image reference for operator-created proxies (the operator's own image). */}}
{{- define "gearshift.cpuImage" -}}
{{- include "gearshift.image" (dict "root" . "component" "operator") }}
{{- end }}

{{- define "gearshift.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "gearshift.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
The wiring the chart fills in per component: addresses of the other services, paths of
mounted files, ports the operator gives model servers. Users can still override any of
these keys in `<component>.settings`. Returns YAML.
*/}}
{{/*
The retriever's service key (env `GEARSHIFT_<COMPONENT>_RETRIEVER_API_KEY`) for the router
and the operator, when the retriever checks keys. Takes dict root, component.
*/}}
{{- define "gearshift.retrieverKeyEnv" -}}
{{- $keys := .root.Values.retriever.apiKeys }}
{{- if and .root.Values.retriever.enabled $keys.existingSecret }}
- name: GEARSHIFT_{{ upper .component }}_RETRIEVER_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $keys.existingSecret }}
      key: {{ required "retriever.apiKeys.clientKey: the Secret's key holding the router's and operator's service key" $keys.clientKey }}
{{- end }}
{{- end }}

{{- define "gearshift.wiring" -}}
{{- $root := .root }}
{{- $w := dict }}
{{- if eq .component "router" }}
{{- $_ := set $w "kubernetes" true }}
{{- if $root.Values.cache.enabled }}
{{- $_ := set $w "cache_address" (printf "%s:%d" (include "gearshift.componentName" (dict "root" $root "component" "cache")) (int $root.Values.cache.settings.grpc_port)) }}
{{- end }}
{{- if not $root.Values.operator.clusterWide }}
{{- $_ := set $w "watch_namespace" $root.Release.Namespace }}
{{- end }}
{{- if $root.Values.router.apiKeys.existingSecret }}
{{- $_ := set $w "api_keys_file" (printf "/etc/gearshift/api-keys/%s" $root.Values.router.apiKeys.key) }}
{{- end }}
{{- /* Without a PostgreSQL outcome store each replica keeps its own file in /tmp. */}}
{{- $_ := set $w "outcomes_dir" "/tmp/gearshift/outcomes" }}
{{- with $root.Values.router.scorerWeights }}
{{- if or .configMap .persistentVolumeClaim }}
{{- $_ := set $w "scorer_weights" (printf "/etc/gearshift/scorer/%s" .key) }}
{{- end }}
{{- end }}
{{- else if eq .component "cache" }}
{{- /* The chart's `inprocess` is the cache's usearch backend. */}}
{{- $_ := set $w "backend" (eq $root.Values.cache.backend "inprocess" | ternary "usearch" "pgvector") }}
{{- if eq $root.Values.cache.backend "inprocess" }}
{{- $_ := set $w "data_dir" $root.Values.cache.inprocess.mountPath }}
{{- end }}
{{- else if eq .component "retriever" }}
{{- /* The chart's `inprocess` is the retriever's embedded (usearch + SQLite) backend. */}}
{{- $_ := set $w "backend" (eq $root.Values.retriever.backend "inprocess" | ternary "usearch" "pgvector") }}
{{- if eq $root.Values.retriever.backend "inprocess" }}
{{- $_ := set $w "data_dir" $root.Values.retriever.inprocess.mountPath }}
{{- end }}
{{- if $root.Values.retriever.apiKeys.existingSecret }}
{{- $_ := set $w "api_keys_file" (printf "/etc/gearshift/api-keys/%s" $root.Values.retriever.apiKeys.key) }}
{{- end }}
{{- else if eq .component "proxy" }}
{{- $_ := set $w "config_file" "/etc/gearshift/proxy/config.yaml" }}
{{- else if eq .component "operator" }}
{{- $v := $root.Values.operator }}
{{- $_ := set $w "image" (include "gearshift.gpuImage" $root) }}
{{- $_ := set $w "proxy_image" (include "gearshift.cpuImage" $root) }}
{{- $_ := set $w "image_pull_policy" $root.Values.image.pullPolicy }}
{{- $_ := set $w "size_classes" "/etc/gearshift/operator/size-classes.yaml" }}
{{- $_ := set $w "grpc_port" $root.Values.modelServers.grpcPort }}
{{- $_ := set $w "metrics_port" $root.Values.modelServers.metricsPort }}
{{- $_ := set $w "drain_seconds" (int (ceil (float64 $root.Values.commonSettings.grace_period_s))) }}
{{- $_ := set $w "headless_services" $root.Values.modelServers.headlessService }}
{{- with $root.Values.commonSettings }}
{{- $_ := set $w "max_connection_age_s" (.max_connection_age_s | default 0) }}
{{- $_ := set $w "max_connection_age_grace_s" (.max_connection_age_grace_s | default 0) }}
{{- end }}
{{- $_ := set $w "liveness_endpoint" (printf "http://0.0.0.0:%d/healthz" (int $v.healthPort)) }}
{{- $_ := set $w "operator_metrics_port" 9100 }}
{{- $_ := set $w "log_level" $root.Values.commonSettings.log_level }}
{{- if not $v.clusterWide }}
{{- $_ := set $w "namespace" $root.Release.Namespace }}
{{- end }}
{{- $ms := $root.Values.modelServers.serviceAccount }}
{{- if or $ms.name (and $ms.create (not $v.clusterWide)) }}
{{- $_ := set $w "service_account" (include "gearshift.modelServerServiceAccount" $root) }}
{{- end }}
{{- with $v.leaderElection }}
{{- $_ := set $w "leader_election" .enabled }}
{{- $_ := set $w "lease_name" (.leaseName | default (include "gearshift.componentName" (dict "root" $root "component" "operator"))) }}
{{- $_ := set $w "lease_namespace" $root.Release.Namespace }}
{{- $_ := set $w "lease_duration_seconds" .leaseDurationSeconds }}
{{- $_ := set $w "renew_deadline_seconds" .renewDeadlineSeconds }}
{{- $_ := set $w "retry_period_seconds" .retryPeriodSeconds }}
{{- end }}
{{- if $root.Values.retriever.enabled }}
{{- $_ := set $w "retriever_endpoint" (printf "%s.%s.svc:%d" (include "gearshift.componentName" (dict "root" $root "component" "retriever")) $root.Release.Namespace (int $root.Values.retriever.settings.grpc_port)) }}
{{- end }}
{{- end }}
{{- toYaml $w }}
{{- end }}

{{/*
One component's settings, merged (later wins): `commonSettings` and the OTLP endpoint
(gRPC services only; the operator is not one), the chart's wiring, then the user's
`<component>.settings`. Returns YAML; use `fromYaml`.
Call with (dict "root" $ "component" "router").
*/}}
{{- define "gearshift.settings" -}}
{{- $values := index .root.Values .component }}
{{- $merged := dict }}
{{- if ne .component "operator" }}
{{- range $k, $v := .root.Values.commonSettings }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- $_ := set $merged "service_name" (printf "gearshift-%s" .component) }}
{{- if .root.Values.otel.endpoint }}
{{- $_ := set $merged "otlp_endpoint" .root.Values.otel.endpoint }}
{{- end }}
{{- end }}
{{- range $k, $v := (include "gearshift.wiring" . | fromYaml) }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- range $k, $v := $values.settings }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/* A component's own Prometheus port from its settings (0 or less: none). */}}
{{- define "gearshift.metricsPort" -}}
{{- $s := include "gearshift.settings" . | fromYaml }}
{{- if eq .component "operator" }}
{{- index $s "operator_metrics_port" | default 0 | int }}
{{- else }}
{{- index $s "metrics_port" | default 0 | int }}
{{- end }}
{{- end }}

{{/*
Settings rendered generically as env vars: key `grpc_port` of component `router` becomes
GEARSHIFT_ROUTER_GRPC_PORT. Scalars are passed as text, lists and maps as JSON, null
values are left out (the service's default applies).
Call with (dict "component" "router" "settings" $settingsDict).
*/}}
{{- define "gearshift.settingsEnv" -}}
{{- $prefix := printf "GEARSHIFT_%s_" (upper .component) }}
{{- range $k, $v := .settings }}
{{- if not (kindIs "invalid" $v) }}
- name: {{ printf "%s%s" $prefix ($k | snakecase | upper) }}
  {{- if or (kindIs "map" $v) (kindIs "slice" $v) }}
  value: {{ toJson $v | quote }}
  {{- else if and (kindIs "float64" $v) (eq $v (float64 (int64 $v))) }}
  value: {{ int64 $v | toString | quote }}
  {{- else }}
  value: {{ $v | toString | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop pause, then the drain time, plus room to exit.
The kubelet counts the preStop hook against the grace period, so a grace period that left
it out would cut the drain short by that much.
Call with (dict "settings" $settings "preStopSeconds" $values.preStopSeconds).
*/}}
{{- define "gearshift.terminationGrace" -}}
{{- $s := .settings }}
{{- add (int (.preStopSeconds | default 0)) (int (ceil (float64 (index $s "grace_period_s" | default 30)))) 15 }}
{{- end }}

{{/*
The container's preStop: a pause before SIGTERM, so EndpointSlices, kube-proxy and the
routers' endpoint watches stop sending new calls to the pod while it still serves them
all; the drain that follows then refuses only stragglers. Kubernetes' own sleep action
(1.30+, the chart's kubeVersion): the images need no `sleep` binary. 0 leaves it out.
Call with (dict "preStopSeconds" $values.preStopSeconds).
*/}}
{{- define "gearshift.preStop" -}}
{{- if gt (int (.preStopSeconds | default 0)) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int .preStopSeconds }}
{{- end }}
{{- end }}

{{/* gRPC probes on the standard health service (SERVING only after warm-up). */}}
{{- define "gearshift.grpcProbes" -}}
startupProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: {{ max 1 (div (int .startupTimeoutSeconds) 5) }}
readinessProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
livenessProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{/* Writable scratch space, needed because the root filesystem is read-only. */}}
{{- define "gearshift.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "gearshift.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Env vars that point library caches at the writable /tmp (read-only root fs). */}}
{{- define "gearshift.cacheEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: HF_HUB_OFFLINE
  value: "1"
{{- end }}

{{/* Pod placement and scheduling fields shared by all Deployments. */}}
{{- define "gearshift.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Metrics peers for NetworkPolicies (empty list: no rule). */}}
{{- define "gearshift.metricsIngress" -}}
{{- if .root.Values.networkPolicy.metricsFrom }}
- from:
    {{- toYaml .root.Values.networkPolicy.metricsFrom | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ .port }}
{{- end }}
{{- end }}

{{/*
A container's resources with the CPU request raised to one core per worker: with the
`workers` setting above 1, requests.cpu is at least `workers` cores (a larger request
given in `resources` is kept). Call with (dict "resources" $values.resources "settings" $settings).
*/}}
{{- define "gearshift.resources" -}}
{{- $res := deepCopy (.resources | default dict) }}
{{- $workers := int (index .settings "workers" | default 1) }}
{{- if gt $workers 1 }}
{{- $req := $res.requests | default dict }}
{{- $cpu := toString (index $req "cpu" | default "0") }}
{{- $milli := 0 }}
{{- if hasSuffix "m" $cpu }}
{{- $milli = int (trimSuffix "m" $cpu) }}
{{- else }}
{{- $milli = int (mulf (float64 $cpu) 1000) }}
{{- end }}
{{- if lt $milli (mul $workers 1000) }}
{{- $_ := set $req "cpu" (toString $workers) }}
{{- end }}
{{- $_ := set $res "requests" $req }}
{{- end }}
{{- toYaml $res }}
{{- end }}
