{{- define "ztp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ztp.serverName" -}}
{{- .Values.server.name | default (printf "%s-server" (include "ztp.fullname" .)) -}}
{{- end -}}

{{- define "ztp.claimName" -}}
{{- .Values.storage.pvc.claimName | default (printf "%s-store" (include "ztp.fullname" .)) -}}
{{- end -}}

{{- define "ztp.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "ztp.externalURL" -}}
{{- .Values.externalURL | default (printf "http://%s.%s.svc" (include "ztp.serverName" .) .Release.Namespace) -}}
{{- end -}}

{{/* Namespace of the SwitchProfiles the server reports on: the watched one, or every one. */}}
{{- define "ztp.watchNamespace" -}}
{{- .Values.controller.watchNamespace -}}
{{- end -}}

{{- define "ztp.labels" -}}
app.kubernetes.io/name: ztp-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ztp.controllerSelector" -}}
app.kubernetes.io/name: ztp-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "ztp.validate" -}}
{{- if not (has .Values.storage.type (list "pvc" "s3")) -}}
{{- fail "storage.type must be pvc or s3" -}}
{{- end -}}
{{- if and (eq .Values.storage.type "s3") (not .Values.storage.s3.bucket) -}}
{{- fail "storage.s3.bucket is required with storage.type=s3" -}}
{{- end -}}
{{- if and (eq .Values.storage.type "pvc") (eq .Values.storage.pvc.accessMode "ReadWriteOnce") (gt (int .Values.controller.replicas) 1) -}}
{{- fail "storage.pvc.accessMode=ReadWriteOnce needs controller.replicas=1 (every pod shares the claim's node)" -}}
{{- end -}}
{{- end -}}
