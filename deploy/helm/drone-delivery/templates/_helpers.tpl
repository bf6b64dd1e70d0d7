{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "dd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release name
already contains it. Truncated to 63 characters.
*/}}
{{- define "dd.fullname" -}}
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

{{- define "dd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "dd.labels" -}}
helm.sh/chart: {{ include "dd.chart" . }}
{{ include "dd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fabrikam-drone-delivery
{{- end }}

{{- define "dd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Object name of a component: dict "root" $ "component" "web". */}}
{{- define "dd.componentName" -}}
{{- printf "%s-%s" (include "dd.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dd.componentLabels" -}}
{{ include "dd.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dd.componentSelectorLabels" -}}
{{ include "dd.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dd.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "dd.brokerUrl" -}}
{{- if .Values.env.CELERY_BROKER_URL }}
{{- .Values.env.CELERY_BROKER_URL }}
{{- else }}
{{- printf "azureservicebus://DefaultAzureCredential@%s.servicebus.windows.net" (required "serviceBus.namespace is required" .Values.serviceBus.namespace) }}
{{- end }}
{{- end }}

{{/*
Environment of a component's container: the shared settings, then NAME_FILE for each of the
component's Key Vault secrets. dict "root" $ "component" "web" "config" .Values.web
*/}}
{{- define "dd.env" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $env := omit $values.env "CELERY_BROKER_URL" "ALLOWED_HOSTS" "CSRF_TRUSTED_ORIGINS" "PUBLIC_BASE_URL" "FLEET_SIM_SPEEDUP" -}}
{{- $hosts := default $values.host $values.env.ALLOWED_HOSTS }}
{{- if $values.simulator.enabled }}
{{- /* The simulator calls the web Service by its in-cluster name, which is then its Host. */}}
{{- $hosts = printf "%s,%s" $hosts (include "dd.componentName" (dict "root" $root "component" "web")) }}
{{- end -}}
- name: ALLOWED_HOSTS
  value: {{ $hosts | quote }}
- name: CSRF_TRUSTED_ORIGINS
  value: {{ default (printf "https://%s" $values.host) $values.env.CSRF_TRUSTED_ORIGINS | quote }}
# The base of every link in answers, pages and emails: the public host unless given.
- name: PUBLIC_BASE_URL
  value: {{ default (printf "https://%s" $values.host) $values.env.PUBLIC_BASE_URL | quote }}
- name: CELERY_BROKER_URL
  value: {{ include "dd.brokerUrl" $root | quote }}
# The simulated fleet's clock rate; ETAs divide by it, so every process gets the same value.
- name: FLEET_SIM_SPEEDUP
  value: {{ ternary $values.simulator.speedup 1 $values.simulator.enabled | toString | quote }}
# Telemetry's resource (portal/telemetry.py): the pod, its namespace and node from the Downward
# API, so the dependency map tells the components and replicas apart.
- name: K8S_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: K8S_NAMESPACE_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: K8S_NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME),k8s.node.name=$(K8S_NODE_NAME),k8s.deployment.name=%s,service.version=%s" (include "dd.componentName" .) (default $root.Chart.AppVersion $values.image.tag) | quote }}
{{- if has .component (list "web" "worker") }}
# Several processes (gunicorn's workers, Celery's pool) record metrics here; /metrics sums them.
- name: PROMETHEUS_MULTIPROC_DIR
  value: /tmp/prometheus
{{- end }}
{{- if has .component (list "worker" "beat" "simulator") }}
# These have no web server of their own: /metrics on this port (dd.metricsPort).
- name: METRICS_PORT
  value: {{ $values.metrics.port | toString | quote }}
{{- end }}
{{- range $name := keys $env | sortAlpha }}
- name: {{ $name }}
  value: {{ get $env $name | toString | quote }}
{{- end }}
{{- range $name := .config.secrets }}
{{- $secretName := required (printf "keyVault.secrets has no entry for %s" $name) (get $values.keyVault.secrets $name) }}
- name: {{ $name }}_FILE
  value: /mnt/secrets/{{ $secretName }}
{{- end }}
{{- end }}

{{/* Pod-level security context shared by every pod. */}}
{{- define "dd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.uid }}
runAsGroup: {{ .Values.securityContext.uid }}
fsGroup: {{ .Values.securityContext.uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context shared by every container. */}}
{{- define "dd.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.uid }}
runAsGroup: {{ .Values.securityContext.uid }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Volumes every pod has: /tmp scratch and the Key Vault secrets. dict "root" "component" */}}
{{- define "dd.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
- name: secrets
  csi:
    driver: secrets-store.csi.k8s.io
    readOnly: true
    volumeAttributes:
      secretProviderClass: {{ include "dd.componentName" . }}
{{- end }}

{{- define "dd.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: secrets
  mountPath: /mnt/secrets
  readOnly: true
{{- end }}

{{/*
The pod spec fields every component shares: service account, security, volumes, spreading.
dict "root" $ "component" "web" "config" .Values.web
*/}}
{{- define "dd.podCommon" -}}
serviceAccountName: {{ include "dd.componentName" . }}
# The pods never call the Kubernetes API. Workload identity projects its own token volume, so
# the service account token is not mounted.
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ .config.terminationGracePeriodSeconds | default 30 }}
securityContext:
  {{- include "dd.podSecurityContext" .root | nindent 2 }}
volumes:
  {{- include "dd.volumes" . | nindent 2 }}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "dd.componentSelectorLabels" . | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "dd.componentSelectorLabels" . | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
{{- end }}
{{- end }}

{{/* Labels of a component's pods: selector labels plus workload identity. */}}
{{- define "dd.podLabels" -}}
{{ include "dd.componentLabels" . }}
azure.workload.identity/use: "true"
{{- end }}

{{/* The container fields every component shares. dict "root" "component" "config" */}}
{{- define "dd.containerCommon" -}}
image: {{ include "dd.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- include "dd.containerSecurityContext" .root | nindent 2 }}
resources:
  {{- toYaml .config.resources | nindent 2 }}
volumeMounts:
  {{- include "dd.volumeMounts" . | nindent 2 }}
{{- end }}

{{/* A Deployment's strategy for a component that runs more than one replica. */}}
{{- define "dd.rollingStrategy" -}}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- end }}

{{/* Port every Service of the chart listens on (the pods' own ports differ). */}}
{{- define "dd.servicePort" -}}80{{- end }}

{{/* The port a serving component's container listens on: "web" or "live". dict "root" "component" */}}
{{- define "dd.containerPort" -}}
{{- if eq .component "web" }}8000{{ else if eq .component "live" }}{{ .root.Values.live.port }}{{ else }}{{ fail (printf "%s serves no port" .component) }}{{ end }}
{{- end }}

{{/* The port a component serves /metrics on: web and live on their own, the others on
metrics.port; "" for migrations. dict "root" "component" */}}
{{- define "dd.metricsPort" -}}
{{- if has .component (list "web" "live") }}{{ include "dd.containerPort" . }}{{ else if has .component (list "worker" "beat" "simulator") }}{{ .root.Values.metrics.port }}{{ end }}
{{- end }}

{{/* The metrics port of worker, beat and the simulator, in their container's spec. */}}
{{- define "dd.metricsContainerPort" -}}
ports:
  - name: metrics
    containerPort: {{ .root.Values.metrics.port }}
    protocol: TCP
{{- end }}

{{/* The web Service as the simulator reaches it inside the cluster. */}}
{{- define "dd.webServiceUrl" -}}
{{- printf "http://%s:%s" (include "dd.componentName" (dict "root" . "component" "web")) (include "dd.servicePort" .) }}
{{- end }}

{{- define "dd.dnsPeer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
  podSelector:
    matchLabels:
      {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 6 }}
{{- end }}

{{- define "dd.dnsPorts" -}}
- port: 53
  protocol: UDP
- port: 53
  protocol: TCP
{{- end }}

{{/* Annotations both Ingresses carry (ingress.yaml). */}}
{{- define "dd.ingressAnnotations" -}}
# TLS terminates at the Application Gateway with a listener certificate it reads from Key
# Vault (the private key never enters the cluster); plain HTTP is redirected to HTTPS.
appgw.ingress.kubernetes.io/appgw-ssl-certificate: {{ required "ingress.appgwSslCertificate is required" .Values.ingress.appgwSslCertificate | quote }}
appgw.ingress.kubernetes.io/ssl-redirect: "true"
appgw.ingress.kubernetes.io/waf-policy-for-path: {{ required "ingress.wafPolicyId is required" .Values.ingress.wafPolicyId | quote }}
appgw.ingress.kubernetes.io/backend-protocol: http
# App Gateway probes pods directly on the readiness path, with a Host Django accepts.
appgw.ingress.kubernetes.io/health-probe-path: /healthz/ready
appgw.ingress.kubernetes.io/health-probe-hostname: {{ .Values.host | quote }}
appgw.ingress.kubernetes.io/health-probe-status-codes: "200"
appgw.ingress.kubernetes.io/connection-draining: "true"
{{- end }}
