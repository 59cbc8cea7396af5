{{/* Chart name, overridable. */}}
{{- define "autoj.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>` prefix of every resource name (short enough for a pool suffix). */}}
{{- define "autoj.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels shared by every resource. */}}
{{- define "autoj.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "autoj.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of the router's pods. */}}
{{- define "autoj.routerSelector" -}}
app.kubernetes.io/name: {{ include "autoj.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end -}}

{{/* Selector labels of every judge pod (any pool). */}}
{{- define "autoj.judgeSelector" -}}
app.kubernetes.io/name: {{ include "autoj.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: judge
{{- end -}}

{{/* Selector labels of one pool's pods; call with (dict "root" $ "pool" $pool). */}}
{{- define "autoj.poolSelector" -}}
{{ include "autoj.judgeSelector" .root }}
autoj.dev/pool: {{ .pool.name }}
{{- end -}}

{{/* Every label of one pool's resources; call with (dict "root" $ "pool" $pool). */}}
{{- define "autoj.poolLabels" -}}
{{ include "autoj.labels" .root }}
app.kubernetes.io/component: judge
autoj.dev/pool: {{ .pool.name }}
{{- end -}}

{{/* Name of one pool's Deployment and headless Service. */}}
{{- define "autoj.poolName" -}}
{{- printf "%s-judge-%s" (include "autoj.fullname" .root) .pool.name -}}
{{- end -}}

{{- define "autoj.routerName" -}}
{{- printf "%s-router" (include "autoj.fullname" .) -}}
{{- end -}}

{{- define "autoj.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "autoj.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference; call with (dict "root" $ "image" .Values.image.cpu). */}}
{{- define "autoj.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Secret holding the API keys file, and its key. */}}
{{- define "autoj.authSecret" -}}
{{- default (printf "%s-api-keys" (include "autoj.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
{{- define "autoj.authSecretKey" -}}
{{- if .Values.auth.existingSecret -}}{{ .Values.auth.existingSecretKey }}{{- else -}}api-keys{{- end -}}
{{- end -}}

{{/* Secret holding the router's TLS certificate and key. */}}
{{- define "autoj.tlsSecret" -}}
{{- default (printf "%s-tls" (include "autoj.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* Environment every container gets. */}}
{{- define "autoj.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: AUTOJ_SHUTDOWN_GRACE
  value: {{ printf "%ds" (int .Values.shutdownGraceSeconds) | quote }}
{{- if .Values.metrics.enabled }}
- name: AUTOJ_METRICS_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level fields shared by the router and the judges. */}}
{{- define "autoj.podCommon" -}}
serviceAccountName: {{ include "autoj.serviceAccountName" . }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ add (int .Values.shutdownGraceSeconds) 15 }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An autoscaling/v2 HPA on CPU; call with (dict "root" $ "name" N "labels" L "spec" S). */}}
{{- define "autoj.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- .labels | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ .spec.minReplicas }}
  maxReplicas: {{ .spec.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .spec.targetCPUUtilizationPercentage }}
{{- end -}}

{{/* Checks the schema cannot express: unique pool names and a default pool that exists. */}}
{{- define "autoj.validate" -}}
{{- $names := list -}}
{{- range .Values.pools -}}
{{- if has .name $names -}}
{{- fail (printf "pools: the name %q is used twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- if not (has .Values.router.defaultPool $names) -}}
{{- fail (printf "router.defaultPool %q names no pool (pools: %s)" .Values.router.defaultPool (join ", " $names)) -}}
{{- end -}}
{{- end -}}
