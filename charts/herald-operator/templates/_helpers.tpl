{{- define "herald-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "herald-operator.labels" -}}
app.kubernetes.io/name: herald-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "herald-operator.selector" -}}
app.kubernetes.io/name: herald-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "herald-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "herald-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "herald-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- /* The image of gateways without spec.image (the operator's --default-gateway-image). */ -}}
{{- define "herald-operator.gatewayImage" -}}
{{- printf "%s:%s" .Values.gateway.image.repository (default .Chart.AppVersion .Values.gateway.image.tag) -}}
{{- end -}}

{{- /*
What the operator may do in a namespace whose gateways it reconciles: exactly the calls it makes, and
nothing cluster-scoped. Bound cluster-wide (a ClusterRole) without watchNamespaces, or by a Role in each
watched namespace with it (rbac.yaml). Server-side apply is PATCH, and CREATE when the object does not
exist yet. get on every kind the operator applies: before writing a gateway's children it reads each
one's metadata, by name, so that it never overwrites an object the gateway does not control.
*/ -}}
{{- define "herald-operator.namespacedRules" -}}
- apiGroups: ["herald.dev"]
  resources: ["notificationgateways", "notificationchannels"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["herald.dev"]
  resources: ["notificationgateways/status", "notificationchannels/status"]
  verbs: ["patch"]
# Children carry blockOwnerDeletion; clusters enforcing OwnerReferencesPermissionEnforcement (OpenShift)
# require this to set it.
- apiGroups: ["herald.dev"]
  resources: ["notificationgateways/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# No list or watch: Secrets are read one by one, by name (the metadata of those a gateway names, the
# signing keys). create and patch: the operator creates each gateway's signing-key Secret and rotates
# its keys itself (a merge patch carrying the resourceVersion read: compare-and-swap).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# A channel is Programmed once every ready replica serves it: the operator lists the EndpointSlices of
# <gw>-internal (the ready pods' addresses) and asks each pod, on its internal port, which channels it serves.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
# An embedded gateway's SQLite lives on a claim the operator creates (never deleted by it: the
# garbage collector removes it with the gateway). list and watch, here and on Jobs and PDBs: the
# operator watches every kind it owns (its own objects only, by label), so a deleted child comes back.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Cluster mode: one Job per gateway version applies the database migrations.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A gateway's ServiceMonitor (spec.monitoring), where the Prometheus Operator's CRDs are installed:
# read by name before it is written, applied, deleted once turned off. Not listed or watched: the kind
# may not exist in the cluster (a deleted one comes back at the gateway's next reconcile).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{- define "herald-operator.watchNamespaces" -}}
{{- join "," (uniq .Values.watchNamespaces) -}}
{{- end -}}
