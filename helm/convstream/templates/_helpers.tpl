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
values), extraEnv. The doctor test Pod gets the same (it reads the destinations' accounts
with the worker's credentials). The replay Job gets the ConfigMap and extraEnv only: it
moves records between topics and needs no destination credentials.
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
