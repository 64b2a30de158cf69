{{/*
The rule groups of rules/rules.yaml (the master copy) as a YAML list, with
`prometheusRule` from the values applied to each alert: `alerts.<name>`
(`enabled`, `for`, `severity` and the alert's params, which its `expr` uses as
template fields), `additionalRuleLabels`, and a `runbook_url` made of
`runbookBaseUrl` and the alert's name in lower case (a heading anchor of
docs/alerts.md). Annotations are copied untouched: their `{{ $labels.x }}` are
Prometheus templates, expanded when an alert fires.
*/}}
{{- define "api-metrics-exporter.ruleGroups" -}}
{{- $values := .Values.prometheusRule }}
{{- $overrides := default dict $values.alerts }}
{{- $master := .Files.Get "rules/rules.yaml" | fromYaml }}
{{- if not $master.groups }}
{{- fail "rules/rules.yaml is missing or has no groups" }}
{{- end }}
{{- $groups := list }}
{{- range $group := $master.groups }}
{{- $rules := list }}
{{- range $rule := $group.rules }}
{{- if $rule.record }}
{{- $rules = append $rules (dict "record" $rule.record "expr" $rule.expr) }}
{{- else }}
{{- $override := default dict (index $overrides $rule.alert) }}
{{- if dig "enabled" true $override }}
{{- $params := merge (omit $override "enabled" "for" "severity") (default dict $rule.params) }}
{{- $expr := tpl $rule.expr (merge (dict "Template" $.Template) $params) }}
{{- $labels := merge (dict "severity" (dig "severity" $rule.labels.severity $override)) (omit $rule.labels "severity") (default dict $values.additionalRuleLabels) }}
{{- $runbook := printf "%s#%s" $values.runbookBaseUrl (lower $rule.alert) }}
{{- $annotations := merge (dict "runbook_url" $runbook) $rule.annotations }}
{{- $out := dict "alert" $rule.alert "expr" $expr "for" (dig "for" $rule.for $override) "labels" $labels "annotations" $annotations }}
{{- $rules = append $rules $out }}
{{- end }}
{{- end }}
{{- end }}
{{- if $rules }}
{{- $groups = append $groups (dict "name" $group.name "rules" $rules) }}
{{- end }}
{{- end }}
{{- toYaml $groups }}
{{- end }}
