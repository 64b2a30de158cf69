{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "api-metrics-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, truncated to 63 characters.
If the release name already contains the chart name it is used as is.
*/}}
{{- define "api-metrics-exporter.fullname" -}}
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
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "api-metrics-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Namespace of the namespaced objects.
*/}}
{{- define "api-metrics-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "api-metrics-exporter.labels" -}}
{{- $labels := dict "app.kubernetes.io/name" (include "api-metrics-exporter.name" .) "app.kubernetes.io/instance" .Release.Name }}
{{- $_ := set $labels "helm.sh/chart" (include "api-metrics-exporter.chart" .) }}
{{- $_ := set $labels "app.kubernetes.io/version" (include "api-metrics-exporter.imageTag" . | trunc 63 | trimSuffix "-") }}
{{- $_ := set $labels "app.kubernetes.io/component" "exporter" }}
{{- $_ := set $labels "app.kubernetes.io/managed-by" .Release.Service }}
{{- toYaml (merge $labels (default dict .Values.commonLabels)) }}
{{- end }}

{{/*
Common labels plus extra label maps, without duplicate keys (later maps win):
  include "api-metrics-exporter.labelsWith" (dict "ctx" $ "extra" (list .Values.x.labels))
*/}}
{{- define "api-metrics-exporter.labelsWith" -}}
{{- $labels := include "api-metrics-exporter.labels" .ctx | fromYaml }}
{{- range .extra }}
{{- $labels = mergeOverwrite $labels (default dict .) }}
{{- end }}
{{- toYaml $labels }}
{{- end }}

{{/*
Selector labels (immutable in a Deployment: never add to these).
*/}}
{{- define "api-metrics-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "api-metrics-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "api-metrics-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "api-metrics-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: the `image.tag` value, else the chart's appVersion.
*/}}
{{- define "api-metrics-exporter.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Full image reference; a digest wins over the tag.
*/}}
{{- define "api-metrics-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "api-metrics-exporter.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Container port, read from `config.server.listen` ("host:port", "[::]:port").
*/}}
{{- define "api-metrics-exporter.port" -}}
{{- $listen := "" }}
{{- with .Values.config }}{{ with .server }}{{ $listen = .listen | default "" }}{{ end }}{{ end }}
{{- $port := regexFind "[0-9]+$" (toString $listen) }}
{{- if not $port }}
{{- $port = "9687" }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
Fixed paths inside the container. The image's default CMD uses the same config path.
*/}}
{{- define "api-metrics-exporter.configPath" -}}/etc/api-metrics-exporter/exporter.toml{{- end }}
{{- define "api-metrics-exporter.secretsDir" -}}/etc/api-metrics-exporter/secrets{{- end }}
{{- define "api-metrics-exporter.stateDir" -}}/var/lib/api-metrics-exporter{{- end }}

{{/*
Name of the ConfigMap holding exporter.toml.
*/}}
{{- define "api-metrics-exporter.configMapName" -}}
{{- default (include "api-metrics-exporter.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/*
Whether a Secret is mounted ("true" or empty), and its name.
*/}}
{{- define "api-metrics-exporter.secretEnabled" -}}
{{- if or .Values.existingSecret .Values.secrets }}true{{ end }}
{{- end }}
{{- define "api-metrics-exporter.secretName" -}}
{{- default (include "api-metrics-exporter.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
Name of the state PersistentVolumeClaim.
*/}}
{{- define "api-metrics-exporter.stateClaimName" -}}
{{- default (printf "%s-state" (include "api-metrics-exporter.fullname" .)) .Values.state.existingClaim }}
{{- end }}

{{/*
Helm reads every number in values as a float64, so `toToml` would write
`test_run_ids = [103054.0]`. This walks a (copied) map in place and turns
integral floats back into integers, in maps, lists and lists of maps.
*/}}
{{- define "api-metrics-exporter.intify" -}}
{{- $m := . }}
{{- range $k, $v := $m }}
{{- if kindIs "float64" $v }}
{{- if eq (floor $v) $v }}{{ $_ := set $m $k (int64 $v) }}{{ end }}
{{- else if kindIs "map" $v }}
{{- include "api-metrics-exporter.intify" $v }}
{{- else if kindIs "slice" $v }}
{{- $items := list }}
{{- range $v }}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- $items = append $items (int64 .) }}
{{- else }}
{{- if kindIs "map" . }}{{ include "api-metrics-exporter.intify" . }}{{ end }}
{{- $items = append $items . }}
{{- end }}
{{- end }}
{{- $_ := set $m $k $items }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The rendered exporter.toml: `config`, with `[state] dir` set when `state.enabled`.
*/}}
{{- define "api-metrics-exporter.config" -}}
{{- $config := deepCopy (default dict .Values.config) }}
{{- $state := default dict $config.state }}
{{- if .Values.state.enabled }}
{{- $_ := set $state "dir" (include "api-metrics-exporter.stateDir" .) }}
{{- $_ := set $config "state" $state }}
{{- else if $state.dir }}
{{- fail "config.state.dir is set but state.enabled is false: the root filesystem is read-only; set state.enabled=true and leave config.state.dir unset (the chart sets it)" }}
{{- end }}
{{- if .Values.sharding.enabled }}
{{- if and .Values.state.enabled (eq .Values.state.type "pvc") }}
{{- fail "sharding.enabled cannot use state.type=pvc: one claim cannot serve every shard; use state.type=emptyDir" }}
{{- end }}
{{- $_ := set $config "sharding" (dict "total" (int .Values.sharding.replicas) "index_from_hostname" true) }}
{{- end }}
{{- include "api-metrics-exporter.intify" $config }}
{{- toToml $config }}
{{- end }}

{{/*
The exporter container, as one element of a pod's `containers` list (without
the leading "- "). The Deployment uses it; another chart that has this chart
as a dependency puts the exporter beside its own container with

  containers:
    - name: app
      ...
    - {{- include "api-metrics-exporter.container" (index .Subcharts "api-metrics-exporter") | nindent 6 }}
  volumes:
    {{- include "api-metrics-exporter.volumes" (index .Subcharts "api-metrics-exporter") | nindent 4 }}

(set `api-metrics-exporter.deployment.enabled: false` in the parent's values).
*/}}
{{- define "api-metrics-exporter.container" -}}
name: {{ .Chart.Name }}
image: {{ include "api-metrics-exporter.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - run
  - --config
  - {{ include "api-metrics-exporter.configPath" . }}
  {{- with .Values.logLevel }}
  - --log-level
  - {{ . | quote }}
  {{- end }}
  {{- with .Values.logFormat }}
  - --log-format
  - {{ . | quote }}
  {{- end }}
  {{- range .Values.extraArgs }}
  - {{ . | quote }}
  {{- end }}
{{- with .Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: {{ .Values.portName }}
    containerPort: {{ include "api-metrics-exporter.port" . }}
    protocol: TCP
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .Values.portName }}
  {{- toYaml .Values.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .Values.portName }}
  {{- toYaml .Values.readinessProbe | nindent 2 }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: apimetrics-config
    mountPath: {{ include "api-metrics-exporter.configPath" . }}
    subPath: exporter.toml
    readOnly: true
  {{- if include "api-metrics-exporter.secretEnabled" . }}
  - name: apimetrics-secrets
    mountPath: {{ include "api-metrics-exporter.secretsDir" . }}
    readOnly: true
  {{- end }}
  - name: apimetrics-tmp
    mountPath: /tmp
  {{- if .Values.state.enabled }}
  - name: apimetrics-state
    mountPath: {{ include "api-metrics-exporter.stateDir" . }}
  {{- end }}
{{- end }}

{{/*
The volumes the exporter container mounts, as a list (for a pod's `volumes`).
*/}}
{{- define "api-metrics-exporter.volumes" -}}
- name: apimetrics-config
  configMap:
    name: {{ include "api-metrics-exporter.configMapName" . }}
{{- if include "api-metrics-exporter.secretEnabled" . }}
- name: apimetrics-secrets
  secret:
    secretName: {{ include "api-metrics-exporter.secretName" . }}
{{- end }}
- name: apimetrics-tmp
  emptyDir:
    {{- with .Values.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- if .Values.state.enabled }}
- name: apimetrics-state
  {{- if eq .Values.state.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "api-metrics-exporter.stateClaimName" . }}
  {{- else }}
  emptyDir:
    {{- with .Values.state.size }}
    sizeLimit: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Pod annotations that roll the pods when the config or the secret values change.
With existingConfigMap / existingSecret only the name is known to the chart.
*/}}
{{- define "api-metrics-exporter.checksums" -}}
checksum/config: {{ (ternary .Values.existingConfigMap (include "api-metrics-exporter.config" .) (not (empty .Values.existingConfigMap))) | sha256sum }}
checksum/secret: {{ (ternary .Values.existingSecret (toJson (default dict .Values.secrets)) (not (empty .Values.existingSecret))) | sha256sum }}
{{- end }}
