{{- define "kuberollout.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kuberollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kuberollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kuberollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kuberollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuberollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kuberollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kuberollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The rules the operator needs, shared by the ClusterRole and the per-namespace Roles. Every verb is
one the operator uses; nothing else (no secrets, no pods/create, never bind or escalate).

Kubernetes forbids creating a Role that grants more than its creator holds (without `escalate`)
and binding a Role whose rights the binder lacks (without `bind`). So the Roles the operator
creates can never exceed the rules below, and two of these rules exist only for that check:
`rolloutjobs: get` and `configmaps: update` are held so that the operator may grant them to a
job's runtime (its own RolloutJob, its own state ConfigMap, by resourceNames), and
`pods: get, list, watch` is granted on to a pool's router for its service discovery.
*/}}
{{- define "kuberollout.rules" -}}
# list, watch: kopf's watches and indexes. patch: never the spec (the operator writes only
# status), kept for kopf's own bookkeeping. delete: ttlSecondsAfterFinished deletes the RolloutJob.
- apiGroups: [kuberollout.io]
  resources: [sglangpools, rolloutjobs]
  verbs: [get, list, watch, patch, delete]
# patch: the status the operator decides (a merge patch guarded by the resourceVersion).
- apiGroups: [kuberollout.io]
  resources: [sglangpools/status, rolloutjobs/status]
  verbs: [get, patch]
- apiGroups: [kuberollout.io]
  resources: [sglangpools/scale]
  verbs: [get]
# The children the operator watches (server/router Deployments, runtime Jobs, state ConfigMaps):
# list/watch for its indexes; create; get (after a 409, to compare owner and spec hash); patch
# (a child whose desired content changed, or that was edited by hand); delete (a router turned off,
# a runtime Job stopped by suspend, deadline or failure). configmaps: update, see above.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
# Children the operator does not watch (it reads them back only after a 409 or on resync):
# a pool's Services and router ServiceAccount, a job's runtime ServiceAccount.
- apiGroups: [""]
  resources: [services, serviceaccounts]
  verbs: [get, create, patch, delete]
# Pods: read only (why a server or runtime pod is not running goes into status); see above.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# The pool servers' readiness gate (kuberollout.io/weights-synced): a condition in pod status.
- apiGroups: [""]
  resources: [pods/status]
  verbs: [patch]
# Roles and RoleBindings, one pair per RolloutJob (its runtime: get its RolloutJob, get/update/patch
# its state ConfigMap) and per SGLangPool (its router: get/list/watch pods). create: those pairs;
# get: read one back after a 409; patch: restore one edited by hand, or move a job's binding when
# spec.runtime.serviceAccountName changes (only to ServiceAccounts the policy allows); delete: a
# pool's router turned off. Their content is fixed by the operator's code, never by a spec.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* CEL variables of the admission policies: the values.policy lists (ServiceAccount globs as regexes). */}}
{{- define "kuberollout.policyVariables" -}}
- name: allowedServiceAccounts
  expression: {{ toJson .accounts | quote }}
- name: allowedVolumeTypes
  expression: {{ toJson .Values.policy.allowedVolumeTypes | quote }}
- name: allowedImagePrefixes
  expression: {{ toJson .Values.policy.allowedImagePrefixes | quote }}
- name: how
  expression: "' (ask the cluster administrator: chart values policy.*)'"
{{- end -}}
