{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "convstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already has it. */}}
{{- define "convstream.fullname" -}}
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

{{- define "convstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "convstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "convstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "convstream.labels" -}}
helm.sh/chart: {{ include "convstream.chart" . }}
{{ include "convstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: convstream
{{- end }}

{{- define "convstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "convstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "convstream.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
The worker's environment: the ConfigMap (envFrom), the credentials as secretKeyRef (never
values), the Kafka Secret files, extraEnv. The doctor test Pod gets the same (it reads the
destinations' accounts with the worker's credentials). The replay Job gets the ConfigMap,
the Kafka Secret files and extraEnv only: it moves records between topics and needs no
destination credentials.
*/}}
{{- define "convstream.envFrom" -}}
- configMapRef:
    name: {{ include "convstream.fullname" . }}
{{- end }}

{{- define "convstream.env" -}}
{{- $g := .Values.googleAds }}
{{- if $g.enabled }}
{{- if not $g.existingSecret }}
{{- fail "googleAds.enabled needs googleAds.existingSecret (the name of a Secret with the credentials)" }}
{{- end }}
- name: GOOGLE_ADS_DEVELOPER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $g.existingSecret }}
      key: {{ $g.keys.developerToken }}
{{- if $g.jsonKeyFile.enabled }}
- name: GOOGLE_ADS_JSON_KEY_FILE_PATH
  value: {{ printf "%s/%s" $g.jsonKeyFile.mountPath $g.jsonKeyFile.key | quote }}
{{- else }}
- name: GOOGLE_ADS_CLIENT_ID
  valueFrom:
    secretKeyRef:
      name: {{ $g.existingSecret }}
      key: {{ $g.keys.clientId }}
- name: GOOGLE_ADS_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $g.existingSecret }}
      key: {{ $g.keys.clientSecret }}
- name: GOOGLE_ADS_REFRESH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $g.existingSecret }}
      key: {{ $g.keys.refreshToken }}
{{- end }}
{{- end }}
{{- $y := .Values.yandexMetrica }}
{{- if $y.enabled }}
{{- if not $y.existingSecret }}
{{- fail "yandexMetrica.enabled needs yandexMetrica.existingSecret (the name of a Secret with the OAuth token)" }}
{{- end }}
- name: YANDEX_METRICA_OAUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $y.existingSecret }}
      key: {{ $y.key }}
{{- end }}
{{- include "convstream.kafkaEnv" . }}
{{- include "convstream.credentialsEnv" . }}
{{- include "convstream.extraEnv" . }}
{{- end }}

{{- define "convstream.extraEnv" -}}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Google Ads key-file volume (service account), when enabled. */}}
{{- define "convstream.googleKeyVolume" -}}
{{- if and .Values.googleAds.enabled .Values.googleAds.jsonKeyFile.enabled }}
- name: google-ads-key
  secret:
    secretName: {{ .Values.googleAds.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.googleAds.jsonKeyFile.key }}
        path: {{ .Values.googleAds.jsonKeyFile.key }}
{{- end }}
{{- end }}

{{- define "convstream.googleKeyMount" -}}
{{- if and .Values.googleAds.enabled .Values.googleAds.jsonKeyFile.enabled }}
- name: google-ads-key
  mountPath: {{ .Values.googleAds.jsonKeyFile.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The accounts file of `convstream doctor` (doctor.accounts), when set: the ConfigMap
<fullname>-accounts mounted read-only at /etc/convstream (the whole directory, no subPath,
so an upgrade's new accounts reach running pods without a restart).
*/}}
{{- define "convstream.accountsDir" -}}
/etc/convstream
{{- end }}

{{- define "convstream.accountsFile" -}}
{{ include "convstream.accountsDir" . }}/accounts.toml
{{- end }}

{{- define "convstream.accountsVolume" -}}
{{- if .Values.doctor.accounts }}
- name: accounts
  configMap:
    name: {{ include "convstream.fullname" . }}-accounts
    defaultMode: 0444
{{- end }}
{{- end }}

{{- define "convstream.accountsMount" -}}
{{- if .Values.doctor.accounts }}
- name: accounts
  mountPath: {{ include "convstream.accountsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Kafka: the bootstrap list (kafka.bootstrap, a list or a comma-separated string) as
CONVSTREAM_BROKER takes it.
*/}}
{{- define "convstream.bootstrap" -}}
{{- if kindIs "slice" .Values.kafka.bootstrap -}}
{{ join "," .Values.kafka.bootstrap }}
{{- else -}}
{{ .Values.kafka.bootstrap }}
{{- end -}}
{{- end }}

{{- define "convstream.kafkaSaslDir" -}}
/var/run/secrets/convstream/kafka-sasl
{{- end }}

{{- define "convstream.kafkaTlsDir" -}}
/var/run/secrets/convstream/kafka-tls
{{- end }}

{{/* SASL in use (SASL_PLAINTEXT or SASL_SSL); TLS in use (SSL or SASL_SSL). */}}
{{- define "convstream.kafkaSasl" -}}
{{- if has .Values.kafka.security.protocol (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "convstream.kafkaTls" -}}
{{- if has .Values.kafka.security.protocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
The ConfigMap's Kafka part: the bootstrap list, the topic durability, and the non-secret
security settings (only when not PLAINTEXT, the worker's default).
*/}}
{{- define "convstream.kafkaConfig" -}}
{{- $k := .Values.kafka }}
{{- if gt (int $k.topics.minInsyncReplicas) (int $k.topics.replicationFactor) }}
{{- fail (printf "kafka.topics.minInsyncReplicas=%v is above kafka.topics.replicationFactor=%v: every write to such a topic is refused" $k.topics.minInsyncReplicas $k.topics.replicationFactor) }}
{{- end }}
CONVSTREAM_BROKER: {{ include "convstream.bootstrap" . | quote }}
CONVSTREAM_TOPIC_REPLICATION_FACTOR: {{ $k.topics.replicationFactor | int | toString | quote }}
CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS: {{ $k.topics.minInsyncReplicas | int | toString | quote }}
{{- if ne $k.security.protocol "PLAINTEXT" }}
CONVSTREAM_KAFKA_SECURITY_PROTOCOL: {{ $k.security.protocol | quote }}
{{- end }}
{{- if include "convstream.kafkaSasl" . }}
CONVSTREAM_KAFKA_SASL_MECHANISM: {{ $k.security.sasl.mechanism | quote }}
CONVSTREAM_KAFKA_SASL_USERNAME: {{ $k.security.sasl.username | quote }}
{{- end }}
{{- if include "convstream.kafkaTls" . }}
CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME: {{ $k.security.tls.checkHostname | toString | quote }}
{{- end }}
{{- end }}

{{/*
The pod's Kafka environment: paths of the mounted Secret files (never a secret as a value),
and the key's password, if any, as a Secret reference.
*/}}
{{- define "convstream.kafkaEnv" -}}
{{- $s := .Values.kafka.security }}
{{- if include "convstream.kafkaSasl" . }}
{{- if not $s.sasl.existingSecret }}
{{- fail "kafka.security.protocol SASL_* needs kafka.security.sasl.existingSecret (the Secret with the password)" }}
{{- end }}
- name: CONVSTREAM_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "%s/%s" (include "convstream.kafkaSaslDir" .) $s.sasl.passwordKey | quote }}
{{- end }}
{{- if and (include "convstream.kafkaTls" .) $s.tls.existingSecret }}
{{- if $s.tls.caKey }}
- name: CONVSTREAM_KAFKA_SSL_CA_FILE
  value: {{ printf "%s/%s" (include "convstream.kafkaTlsDir" .) $s.tls.caKey | quote }}
{{- end }}
{{- if $s.tls.certKey }}
- name: CONVSTREAM_KAFKA_SSL_CERT_FILE
  value: {{ printf "%s/%s" (include "convstream.kafkaTlsDir" .) $s.tls.certKey | quote }}
- name: CONVSTREAM_KAFKA_SSL_KEY_FILE
  value: {{ printf "%s/%s" (include "convstream.kafkaTlsDir" .) $s.tls.keyKey | quote }}
{{- end }}
{{- if $s.tls.keyPasswordKey }}
- name: CONVSTREAM_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.tls.existingSecret }}
      key: {{ $s.tls.keyPasswordKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret volumes behind those files: only the listed keys, read-only. */}}
{{- define "convstream.kafkaVolumes" -}}
{{- $s := .Values.kafka.security }}
{{- if include "convstream.kafkaSasl" . }}
- name: kafka-sasl
  secret:
    secretName: {{ $s.sasl.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $s.sasl.passwordKey }}
        path: {{ $s.sasl.passwordKey }}
{{- end }}
{{- if and (include "convstream.kafkaTls" .) $s.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $s.tls.existingSecret }}
    defaultMode: 0440
    items:
      {{- range $key := list $s.tls.caKey $s.tls.certKey $s.tls.keyKey }}
      {{- if $key }}
      - key: {{ $key }}
        path: {{ $key }}
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "convstream.kafkaMounts" -}}
{{- $s := .Values.kafka.security }}
{{- if include "convstream.kafkaSasl" . }}
- name: kafka-sasl
  mountPath: {{ include "convstream.kafkaSaslDir" . }}
  readOnly: true
{{- end }}
{{- if and (include "convstream.kafkaTls" .) $s.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ include "convstream.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The settings every pod gets: the ConfigMap's data (envFrom), and the topics hook Job's env
(a pre-install hook runs before the ConfigMap exists).
*/}}
{{- define "convstream.configData" -}}
{{- range $name, $value := .Values.config }}
{{- /* YAML numbers arrive as float64: 1000000000 would print as 1e+09 */}}
{{- if and (kindIs "float64" $value) (eq (floor $value) $value) }}
{{ $name }}: {{ int64 $value | toString | quote }}
{{- else }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
CONVSTREAM_METRICS_PORT: {{ .Values.metrics.port | toString | quote }}
CONVSTREAM_METRICS_ADDRESS: {{ .Values.metrics.bindAddress | default "0.0.0.0" | quote }}
CONVSTREAM_DATA_DIR: {{ .Values.persistence.mountPath | quote }}
{{- with .Values.googleAds }}
{{- if .enabled }}
{{- if .loginCustomerId }}
GOOGLE_ADS_LOGIN_CUSTOMER_ID: {{ .loginCustomerId | toString | quote }}
{{- end }}
{{- if .apiVersion }}
GOOGLE_ADS_API_VERSION: {{ .apiVersion | quote }}
{{- end }}
{{- if .endpoint }}
GOOGLE_ADS_ENDPOINT: {{ .endpoint | quote }}
{{- end }}
{{- if .impersonatedEmail }}
GOOGLE_ADS_IMPERSONATED_EMAIL: {{ .impersonatedEmail | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.yandexMetrica.enabled .Values.yandexMetrica.apiUrl }}
YANDEX_METRICA_API_URL: {{ .Values.yandexMetrica.apiUrl | quote }}
{{- end }}
{{ include "convstream.kafkaConfig" . | trim }}
{{- end }}

{{/*
Credential sets (credentials.*): the map from the ConfigMap <fullname>-credentials (or an
existing Secret) at /var/run/convstream/credentials, each secret of credentials.secrets at
/var/run/secrets/convstream/advertisers/<name>; all read-only, whole volumes (no subPath), so updates reach
running pods and the worker reloads them without a restart.
*/}}
{{- define "convstream.credentialsEnabled" -}}
{{- if or .Values.credentials.map .Values.credentials.existingSecret }}true{{- end }}
{{- end }}

{{- define "convstream.credentialsEnv" -}}
{{- if include "convstream.credentialsEnabled" . }}
- name: CONVSTREAM_CREDENTIALS_FILE
  value: /var/run/convstream/credentials/credentials.toml
- name: CONVSTREAM_CREDENTIALS_POLL_SECONDS
  value: {{ .Values.credentials.pollSeconds | quote }}
{{- end }}
{{- end }}

{{- define "convstream.credentialsVolumes" -}}
{{- $c := .Values.credentials }}
{{- if include "convstream.credentialsEnabled" . }}
{{- if and $c.map $c.existingSecret }}
{{- fail "credentials: give map or existingSecret, not both" }}
{{- end }}
- name: credentials-map
{{- if $c.existingSecret }}
  secret:
    secretName: {{ $c.existingSecret }}
    defaultMode: 0440
    items:
      - key: credentials.toml
        path: credentials.toml
{{- else }}
  configMap:
    name: {{ include "convstream.fullname" . }}-credentials
    defaultMode: 0444
{{- end }}
{{- range $c.secrets }}
- name: {{ printf "credentials-%s" .name | trunc 63 | trimSuffix "-" }}
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{- define "convstream.credentialsMounts" -}}
{{- if include "convstream.credentialsEnabled" . }}
- name: credentials-map
  mountPath: /var/run/convstream/credentials
  readOnly: true
{{- range .Values.credentials.secrets }}
- name: {{ printf "credentials-%s" .name | trunc 63 | trimSuffix "-" }}
  mountPath: {{ printf "/var/run/secrets/convstream/advertisers/%s" .name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
