{{/* Names and labels. */}}
{{- define "quietwire.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "quietwire.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "quietwire.labels" -}}
{{ include "quietwire.selectorLabels" . }}
app.kubernetes.io/part-of: quietwire
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Every pod of this release (NetworkPolicy peers). */}}
{{- define "quietwire.releasePeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/name: {{ .Chart.Name }}
    app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "quietwire.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "quietwire.redisSecretName" -}}
{{- if eq .Values.redis.mode "internal" -}}
{{- .Values.redis.internal.existingSecret | default (printf "%s-redis" (include "quietwire.fullname" .)) -}}
{{- else -}}
{{- .Values.redis.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "quietwire.redisPasswordKey" -}}
{{- if eq .Values.redis.mode "internal" -}}
{{- .Values.redis.internal.passwordKey -}}
{{- else -}}
{{- .Values.redis.external.passwordKey -}}
{{- end -}}
{{- end -}}

{{/* A Secret value kept across upgrades: the live one if any, else random. */}}
{{- define "quietwire.keptRandom" -}}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $live (hasKey $live.data .key) -}}
{{- index $live.data .key -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}

{{/*
The environment every quietwire service shares. Arguments: root, component,
grpcPort, metricsPort, bindHost (what listeners bind to).
*/}}
{{- define "quietwire.env" -}}
{{- $v := .root.Values -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: QW_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
- name: QW_LOG_IPS
  value: {{ $v.logIps | quote }}
- name: QW_SIP_DOMAIN
  value: {{ required "sip.domain is required: the SIP domain of users' addresses" $v.sip.domain | quote }}
{{- if eq $v.redis.mode "internal" }}
- name: QW_REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "quietwire.fullname" .root) | quote }}
{{- else }}
- name: QW_REDIS_URL
  value: {{ required "redis.external.url is required with redis.mode=external" $v.redis.external.url | quote }}
{{- with $v.redis.external.sentinel.endpoints }}
- name: QW_REDIS_SENTINELS
  value: {{ join "," . | quote }}
- name: QW_REDIS_SENTINEL_MASTER
  value: {{ $v.redis.external.sentinel.masterName | quote }}
- name: QW_REDIS_WAIT_REPLICAS
  value: {{ $v.redis.external.sentinel.waitReplicas | quote }}
- name: QW_REDIS_WAIT_TIMEOUT
  value: {{ $v.redis.external.sentinel.waitTimeout | quote }}
{{- end }}
{{- if $v.redis.external.tls.caSecret }}
- name: QW_REDIS_TLS_CA
  value: /etc/quietwire/redis-ca/{{ $v.redis.external.tls.caKey }}
{{- end }}
{{- end }}
- name: QW_SECRETS_DIR
  value: /etc/quietwire/secrets
- name: QW_GRPC_BIND
  value: {{ .bindHost | quote }}
- name: QW_GRPC_PORT
  value: {{ .grpcPort | quote }}
- name: QW_GRPC_ADVERTISE
  value: {{ printf "$(POD_IP):%v" .grpcPort | quote }}
- name: QW_GRPC_TLS_CERT
  value: /etc/quietwire/grpc/tls.crt
- name: QW_GRPC_TLS_KEY
  value: /etc/quietwire/grpc/tls.key
- name: QW_GRPC_TLS_CA
  value: /etc/quietwire/grpc/ca.crt
- name: QW_GRPC_TLS_SERVER_NAME
  value: {{ $v.grpc.tls.serverName | quote }}
- name: QW_HEALTH_BIND
  value: {{ .bindHost | quote }}
- name: QW_HEALTH_PORT
  value: {{ $v.healthPort | quote }}
- name: QW_METRICS_BIND
  value: {{ .bindHost | quote }}
- name: QW_METRICS_PORT
  value: {{ ternary .metricsPort 0 $v.metrics.enabled | quote }}
{{- end -}}

{{/*
Volumes every quietwire service mounts: the gRPC mTLS files, /tmp, the Redis CA,
and its secret settings as files (QW_SECRETS_DIR: a file per setting, named like
its variable; never in the environment). Arguments: root, sip (signaling's key too).
*/}}
{{- define "quietwire.volumes" -}}
{{- $root := .root -}}
- name: secrets
  {{- if or .sip (include "quietwire.redisSecretName" $root) }}
  projected:
    defaultMode: 0440
    sources:
      {{- if include "quietwire.redisSecretName" $root }}
      - secret:
          name: {{ include "quietwire.redisSecretName" $root }}
          items:
            - {key: {{ include "quietwire.redisPasswordKey" $root }}, path: QW_REDIS_PASSWORD}
      {{- end }}
      {{- if .sip }}
      - secret:
          name: {{ $root.Values.sip.secret.existingSecret | default (printf "%s-sip" (include "quietwire.fullname" $root)) }}
          items:
            - {key: {{ $root.Values.sip.secret.key }}, path: QW_SIP_SECRET}
      {{- end }}
  {{- else }}
  emptyDir:
    sizeLimit: 1Mi
  {{- end }}
{{- with $root }}
- name: grpc-tls
  secret:
    secretName: {{ required "grpc.tls.secretName is required: a Secret with tls.crt, tls.key, ca.crt" .Values.grpc.tls.secretName }}
    defaultMode: 0440
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.external.tls.caSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{- define "quietwire.volumeMounts" -}}
- name: secrets
  mountPath: /etc/quietwire/secrets
  readOnly: true
- name: grpc-tls
  mountPath: /etc/quietwire/grpc
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: redis-ca
  mountPath: /etc/quietwire/redis-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Native gRPC probes on the plain health port; readiness is "", liveness "liveness". */}}
{{- define "quietwire.probes" -}}
startupProbe:
  grpc:
    port: {{ .Values.healthPort }}
    service: liveness
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  grpc:
    port: {{ .Values.healthPort }}
    service: liveness
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  grpc:
    port: {{ .Values.healthPort }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* The pod-level settings of every quietwire pod. */}}
{{- define "quietwire.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "quietwire.container" -}}
{{- $root := .root -}}
{{- $context := deepCopy $root.Values.containerSecurityContext -}}
{{- with .add }}
{{- $_ := set $context "capabilities" (dict "drop" (list "ALL") "add" .) }}
{{- /* Kubernetes grants added capabilities to uid 0 only (no ambient capabilities). */}}
{{- $_ := set $context "runAsUser" 0 }}
{{- $_ := set $context "runAsNonRoot" false }}
{{- end }}
image: {{ include "quietwire.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml $context | nindent 2 }}
{{- end -}}
