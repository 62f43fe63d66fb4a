{{/* Names and labels ------------------------------------------------------------------ */}}

{{- define "lg-deploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-wide prefix of every object name; short enough for "-worker-metrics". */}}
{{- define "lg-deploy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lg-deploy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "lg-deploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lg-deploy
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api") */}}
{{- define "lg-deploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lg-deploy.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lg-deploy.componentLabels" -}}
{{ include "lg-deploy.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lg-deploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lg-deploy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag[@digest]; the tag defaults to the chart's appVersion.
     (dict "root" $ "image" .Values.api.image) */}}
{{- define "lg-deploy.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Secrets ------------------------------------------------------------------------ */}}

{{/* The Secret the chart creates for the URLs and keys it was given. */}}
{{- define "lg-deploy.secretName" -}}
{{- include "lg-deploy.fullname" . -}}
{{- end -}}

{{- define "lg-deploy.postgresqlName" -}}
{{- printf "%s-postgresql" (include "lg-deploy.fullname" .) -}}
{{- end -}}

{{- define "lg-deploy.redisName" -}}
{{- printf "%s-redis" (include "lg-deploy.fullname" .) -}}
{{- end -}}

{{/* Addresses that resolve from other namespaces too (KEDA's operator connects to the
     database from its own). */}}
{{- define "lg-deploy.postgresqlHost" -}}
{{- printf "%s.%s.svc" (include "lg-deploy.postgresqlName" .) .Release.Namespace -}}
{{- end -}}

{{- define "lg-deploy.redisHost" -}}
{{- printf "%s.%s.svc" (include "lg-deploy.redisName" .) .Release.Namespace -}}
{{- end -}}

{{/* The database URL the chart stores ("" when an existing Secret holds it). */}}
{{- define "lg-deploy.databaseUrl" -}}
{{- if .Values.database.existingSecret -}}
{{- else if .Values.postgresql.enabled -}}
{{- $auth := .Values.postgresql.auth -}}
{{- $password := required "postgresql.enabled needs postgresql.auth.password (pass it on every upgrade)" $auth.password -}}
{{- printf "postgresql+asyncpg://%s:%s@%s:5432/%s" $auth.username $password (include "lg-deploy.postgresqlHost" .) $auth.database -}}
{{- else -}}
{{- required "set database.url (postgresql+asyncpg://user:password@host:5432/db), database.existingSecret, or postgresql.enabled for a trial" .Values.database.url -}}
{{- end -}}
{{- end -}}

{{- define "lg-deploy.queueUrl" -}}
{{- if .Values.queue.existingSecret -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s:6379/0" (include "lg-deploy.redisHost" .) -}}
{{- else -}}
{{- required "set queue.url (redis://host:6379/0), queue.existingSecret, or redis.enabled for a trial" .Values.queue.url -}}
{{- end -}}
{{- end -}}

{{- define "lg-deploy.apiKeys" -}}
{{- if not .Values.apiKeys.existingSecret -}}
{{- join "," .Values.apiKeys.keys -}}
{{- end -}}
{{- end -}}

{{/* The KEDA PostgreSQL trigger's libpq URL, derived from the database URL the chart
     stores; "" when the user names a Secret for it. */}}
{{- define "lg-deploy.kedaPostgresqlUrl" -}}
{{- $scaling := .Values.worker.autoscaling -}}
{{- if and $scaling.enabled (eq $scaling.trigger "postgresql") (not $scaling.postgresql.connectionSecret.name) -}}
{{- if .Values.database.existingSecret -}}
{{- fail "worker.autoscaling.postgresql.connectionSecret.name is required with database.existingSecret: KEDA needs a libpq URL (postgresql://...) in a Secret" -}}
{{- end -}}
{{- include "lg-deploy.databaseUrl" . | replace "postgresql+asyncpg://" "postgresql://" -}}
{{- end -}}
{{- end -}}

{{/* host, dbName and userName of the KEDA PostgreSQL trigger: KEDA keys its connection
     pools on them, so two ScaledObjects that gave only a connection string would share
     one pool (and one database). From the values, or from the database URL the chart holds. */}}
{{- define "lg-deploy.kedaPostgresqlIdentity" -}}
{{- $pg := .Values.worker.autoscaling.postgresql -}}
{{- $identity := dict "host" $pg.host "dbName" $pg.dbName "userName" $pg.userName -}}
{{- if not (and $pg.host $pg.dbName $pg.userName) -}}
{{- if .Values.database.existingSecret -}}
{{- fail "with database.existingSecret, set worker.autoscaling.postgresql.host, dbName and userName (KEDA keys its connection pools on them)" -}}
{{- end -}}
{{- $url := urlParse (include "lg-deploy.databaseUrl" .) -}}
{{- $_ := set $identity "host" ($pg.host | default $url.hostname) -}}
{{- $_ := set $identity "dbName" ($pg.dbName | default (trimPrefix "/" $url.path)) -}}
{{- $_ := set $identity "userName" ($pg.userName | default (regexReplaceAll ":.*$" $url.userinfo "")) -}}
{{- end -}}
{{- toJson $identity -}}
{{- end -}}

{{/* Every key of the chart's Secret, as a dict (empty: the chart creates no Secret). */}}
{{- define "lg-deploy.secretData" -}}
{{- $data := dict -}}
{{- $db := include "lg-deploy.databaseUrl" . -}}
{{- if $db }}{{ $_ := set $data "database-url" $db }}{{ end -}}
{{- $queue := include "lg-deploy.queueUrl" . -}}
{{- if $queue }}{{ $_ := set $data "queue-url" $queue }}{{ end -}}
{{- $keys := include "lg-deploy.apiKeys" . -}}
{{- if $keys }}{{ $_ := set $data "api-keys" $keys }}{{ end -}}
{{- $keda := include "lg-deploy.kedaPostgresqlUrl" . -}}
{{- if $keda }}{{ $_ := set $data "keda-postgresql-url" $keda }}{{ end -}}
{{- toJson $data -}}
{{- end -}}

{{/* Where each secret value lives: (dict "name" ... "key" ...). */}}
{{- define "lg-deploy.databaseSecretRef" -}}
{{- if .Values.database.existingSecret -}}
{{- toJson (dict "name" .Values.database.existingSecret "key" .Values.database.existingSecretKey) -}}
{{- else -}}
{{- toJson (dict "name" (include "lg-deploy.secretName" .) "key" "database-url") -}}
{{- end -}}
{{- end -}}

{{- define "lg-deploy.queueSecretRef" -}}
{{- if .Values.queue.existingSecret -}}
{{- toJson (dict "name" .Values.queue.existingSecret "key" .Values.queue.existingSecretKey) -}}
{{- else -}}
{{- toJson (dict "name" (include "lg-deploy.secretName" .) "key" "queue-url") -}}
{{- end -}}
{{- end -}}

{{/* Migrations --------------------------------------------------------------------- */}}

{{/* hook, initContainer or none */}}
{{- define "lg-deploy.migrationMode" -}}
{{- if eq .Values.migrations.mode "auto" -}}
{{- if .Values.postgresql.enabled }}initContainer{{ else }}hook{{ end -}}
{{- else -}}
{{- .Values.migrations.mode -}}
{{- end -}}
{{- end -}}

{{/* Pod and container parts shared by every lg-deploy container -------------------- */}}

{{/* LG_DEPLOY_CONFIG: explicit path, the ConfigMap's langgraph.json, or nothing. */}}
{{- define "lg-deploy.configPath" -}}
{{- if .Values.graphs.configPath -}}
{{- .Values.graphs.configPath -}}
{{- else if or .Values.graphs.files .Values.graphs.existingConfigMap -}}
{{- printf "%s/langgraph.json" (.Values.graphs.mountPath | trimSuffix "/") -}}
{{- end -}}
{{- end -}}

{{- define "lg-deploy.graphsConfigMapName" -}}
{{- if .Values.graphs.existingConfigMap -}}
{{- .Values.graphs.existingConfigMap -}}
{{- else if .Values.graphs.files -}}
{{- printf "%s-graphs" (include "lg-deploy.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Env of every lg-deploy container: backends, keys, graphs, logging, extra settings. */}}
{{- define "lg-deploy.env" -}}
{{- $db := include "lg-deploy.databaseSecretRef" . | fromJson -}}
{{- $queue := include "lg-deploy.queueSecretRef" . | fromJson -}}
- name: LG_DEPLOY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.name }}
      key: {{ $db.key }}
- name: LG_DEPLOY_QUEUE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $queue.name }}
      key: {{ $queue.key }}
{{- if .Values.queue.name }}
- name: LG_DEPLOY_QUEUE_NAME
  value: {{ .Values.queue.name | quote }}
{{- end }}
{{- if .Values.apiKeys.existingSecret }}
- name: LG_DEPLOY_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.apiKeys.existingSecret }}
      key: {{ .Values.apiKeys.existingSecretKey }}
{{- else if .Values.apiKeys.keys }}
- name: LG_DEPLOY_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "lg-deploy.secretName" . }}
      key: api-keys
{{- end }}
{{- with include "lg-deploy.configPath" . }}
- name: LG_DEPLOY_CONFIG
  value: {{ . | quote }}
{{- end }}
- name: LG_DEPLOY_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LG_DEPLOY_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: HOME
  value: {{ .Values.writableDirs.home | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "lg-deploy.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ .Values.writableDirs.home }}
{{- if include "lg-deploy.graphsConfigMapName" . }}
- name: graphs
  mountPath: {{ .Values.graphs.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "lg-deploy.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.writableDirs.tmpSizeLimit }}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.writableDirs.homeSizeLimit }}
{{- with include "lg-deploy.graphsConfigMapName" . }}
- name: graphs
  configMap:
    name: {{ . }}
{{- end }}
{{- end -}}

{{/* Restarts pods when what they read at start-up changes. */}}
{{- define "lg-deploy.checksums" -}}
checksum/secret: {{ include "lg-deploy.secretData" . | sha256sum }}
{{- if .Values.graphs.files }}
checksum/graphs: {{ toJson .Values.graphs.files | sha256sum }}
{{- end }}
{{- end -}}

{{/* The init container that migrates the schema (migrations.mode initContainer). */}}
{{- define "lg-deploy.migrateInitContainer" -}}
{{- if eq (include "lg-deploy.migrationMode" .) "initContainer" -}}
initContainers:
  - name: migrate
    image: {{ include "lg-deploy.image" (dict "root" . "image" .Values.api.image) }}
    imagePullPolicy: {{ .Values.api.image.pullPolicy }}
    args: ["migrate"]
    env:
      {{- include "lg-deploy.env" . | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .Values.migrations.resources | nindent 6 }}
    volumeMounts:
      {{- include "lg-deploy.volumeMounts" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Topology spread constraints with this component's labelSelector filled in.
     (dict "root" $ "component" "api" "constraints" .Values.api.topologySpreadConstraints) */}}
{{- define "lg-deploy.topologySpread" -}}
{{- $selector := include "lg-deploy.selectorLabels" (dict "root" .root "component" .component) | fromYaml -}}
{{- $out := list -}}
{{- range .constraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- if $out -}}
topologySpreadConstraints:
  {{- toYaml $out | nindent 2 }}
{{- end }}
{{- end -}}
