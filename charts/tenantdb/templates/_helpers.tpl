{{- define "tenantdb.name" -}}tenantdb-operator{{- end -}}
{{- define "tenantdb.labels" -}}
app.kubernetes.io/name: tenantdb-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "tenantdb.selector" -}}
app.kubernetes.io/name: tenantdb-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
