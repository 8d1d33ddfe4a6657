{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "motionguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name "<release>-<chart>", or the release name when it already contains the chart name. */}}
{{- define "motionguard.fullname" -}}
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

{{- define "motionguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "motionguard.labels" -}}
helm.sh/chart: {{ include "motionguard.chart" . }}
{{ include "motionguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{/* Labels that select the worker pods (never change them: Deployment selectors are immutable). */}}
{{- define "motionguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "motionguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "motionguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "motionguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The worker image: "<appVersion>-cpu" or "<appVersion>-cuda" unless image.tag is set. */}}
{{- define "motionguard.image" -}}
{{- $flavor := ternary "cuda" "cpu" .Values.gpu.enabled }}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion $flavor) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* MOTIONGUARD_BROKER: kafka://a:9092;kafka://b:9092 */}}
{{- define "motionguard.broker" -}}
{{- $servers := list }}
{{- range .Values.kafka.bootstrapServers }}
{{- $servers = append $servers (printf "kafka://%s" .) }}
{{- end }}
{{- join ";" $servers }}
{{- end }}

{{- define "motionguard.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "motionguard.tlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/* Where the CA certificate from kafka.caSecret is mounted. */}}
{{- define "motionguard.caDir" -}}/etc/motionguard/kafka-ca{{- end }}

{{/* Where the SASL password from kafka.existingSecret is mounted. */}}
{{- define "motionguard.saslDir" -}}/etc/motionguard/kafka-sasl{{- end }}

{{/* Where the mTLS client certificate and key from kafka.clientCertSecret are mounted. */}}
{{- define "motionguard.clientCertDir" -}}/etc/motionguard/kafka-client{{- end }}

{{/* Where the C2PA trust files from provenance.trust are mounted. */}}
{{- define "motionguard.trustDir" -}}/etc/motionguard/c2pa-trust{{- end }}

{{/* Comma-separated paths of the given keys under the trust directory (a worker list setting). */}}
{{- define "motionguard.trustPaths" -}}
{{- $dir := include "motionguard.trustDir" .root }}
{{- $paths := list }}
{{- range .keys }}{{- $paths = append $paths (printf "%s/%s" $dir .) }}{{- end }}
{{- join "," $paths }}
{{- end }}

{{/* A worker setting value as the worker parses it: lists joined with commas, integral numbers
     without an exponent (Helm reads YAML numbers as float64), booleans as true/false. */}}
{{- define "motionguard.settingValue" -}}
{{- if kindIs "slice" . }}
{{- join "," . }}
{{- else if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
Checks JSON Schema cannot express (values.schema.json checks types, names and the rest).
A consumer group gives each partition to one consumer: replicas beyond the upload topic's
partition count would sit idle (holding a GPU, perhaps), so they are refused.
*/}}
{{- define "motionguard.validate" -}}
{{- $partitions := int .Values.kafka.uploadsPartitions }}
{{- if gt (int .Values.kafka.minInsyncReplicas) (int .Values.kafka.replicationFactor) }}
{{- fail (printf "kafka.minInsyncReplicas (%d) must not exceed kafka.replicationFactor (%d): no write could ever be acknowledged" (int .Values.kafka.minInsyncReplicas) (int .Values.kafka.replicationFactor)) }}
{{- end }}
{{- $hpa := .Values.autoscaling.hpa }}
{{- $keda := .Values.autoscaling.keda }}
{{- if and $hpa.enabled $keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are exclusive: KEDA creates its own HPA" }}
{{- end }}
{{- if and (not $hpa.enabled) (not $keda.enabled) (gt (int .Values.replicaCount) $partitions) }}
{{- fail (printf "replicaCount (%d) must not exceed kafka.uploadsPartitions (%d): a consumer group uses one consumer per partition" (int .Values.replicaCount) $partitions) }}
{{- end }}
{{- if $hpa.enabled }}
{{- if gt (int $hpa.maxReplicas) $partitions }}
{{- fail (printf "autoscaling.hpa.maxReplicas (%d) must not exceed kafka.uploadsPartitions (%d): a consumer group uses one consumer per partition" (int $hpa.maxReplicas) $partitions) }}
{{- end }}
{{- if gt (int $hpa.minReplicas) (int $hpa.maxReplicas) }}
{{- fail "autoscaling.hpa.minReplicas must not exceed autoscaling.hpa.maxReplicas" }}
{{- end }}
{{- end }}
{{- if $keda.enabled }}
{{- if gt (int $keda.maxReplicaCount) $partitions }}
{{- fail (printf "autoscaling.keda.maxReplicaCount (%d) must not exceed kafka.uploadsPartitions (%d): a consumer group uses one consumer per partition" (int $keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- if gt (int $keda.minReplicaCount) (int $keda.maxReplicaCount) }}
{{- fail "autoscaling.keda.minReplicaCount must not exceed autoscaling.keda.maxReplicaCount" }}
{{- end }}
{{- end }}
{{- if and .Values.kafka.clientCertSecret (not (include "motionguard.tlsEnabled" .)) }}
{{- fail (printf "kafka.clientCertSecret needs TLS: kafka.securityProtocol SSL or SASL_SSL, not %s" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.kafka.caSecret (not (include "motionguard.tlsEnabled" .)) }}
{{- fail (printf "kafka.caSecret needs TLS: kafka.securityProtocol SSL or SASL_SSL, not %s" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and (include "motionguard.saslEnabled" .) (not .Values.kafka.existingSecret) }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.existingSecret: the name of a Secret with the SASL username and password" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.kafka.caSecret (not (include "motionguard.tlsEnabled" .)) }}
{{- fail "kafka.caSecret is only used with kafka.securityProtocol SSL or SASL_SSL" }}
{{- end }}
{{- $trust := .Values.provenance.trust }}
{{- if and $trust.existingConfigMap $trust.existingSecret }}
{{- fail "provenance.trust: set existingConfigMap or existingSecret, not both" }}
{{- end }}
{{- $trustKeys := concat $trust.anchorKeys $trust.allowedListKeys }}
{{- if and $trustKeys (not (or $trust.existingConfigMap $trust.existingSecret)) }}
{{- fail "provenance.trust.anchorKeys/allowedListKeys need provenance.trust.existingConfigMap or existingSecret" }}
{{- end }}
{{- if and (or $trust.existingConfigMap $trust.existingSecret) (not $trustKeys) }}
{{- fail "provenance.trust: name the PEM keys to use in anchorKeys and/or allowedListKeys" }}
{{- end }}
{{- $bundle := .Values.model.bundle }}
{{- if and (eq $bundle.source "pvc") (not $bundle.pvc.claimName) }}
{{- fail "model.bundle.source pvc needs model.bundle.pvc.claimName" }}
{{- end }}
{{- if and (eq $bundle.source "initContainer") (not (and $bundle.initContainer.image.repository $bundle.initContainer.image.tag)) }}
{{- fail "model.bundle.source initContainer needs model.bundle.initContainer.image.repository and .tag" }}
{{- end }}
{{- end }}

{{/* Labels that select the review console's pods (a different name, so the worker's selectors never match them). */}}
{{- define "motionguard.review.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-review" (include "motionguard.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource of the review console. */}}
{{- define "motionguard.review.labels" -}}
helm.sh/chart: {{ include "motionguard.chart" . }}
{{ include "motionguard.review.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: review
{{- end }}
