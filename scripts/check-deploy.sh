#!/usr/bin/env bash
# Checks the ops artefacts in deploy/:
#   - deploy/prometheus.yml       promtool check config (which also loads alerts.yml)
#   - deploy/alerts.yml           promtool check rules
#   - deploy/alerts_test.yml      promtool test rules (unit tests of every alert)
#   - deploy/grafana/*.json       valid JSON, a ${datasource} variable, every panel has targets
#                                 with PromQL that promtool parses
#   - metric names                every courier_* name (and `up`) in a dashboard or alert
#                                 expression is in deploy/metrics.txt, the names Courier exports
#   - deploy/kubernetes/          every manifest against the Kubernetes schemas and the KEDA /
#                                 Prometheus Operator CRD schemas, offline, plus Courier's rules
#                                 (scripts/validate-manifests.py); the kustomize output too when
#                                 kubectl is there; deliberately broken copies must fail
#   - prometheusrule.yaml         generated from deploy/alerts.yml (scripts/gen-prometheusrule.py)
#   - docs/operations.md          a runbook heading for every alert
# Installs promtool (scripts/ensure-tools.sh --prometheus) and the Python venv with
# kubernetes-validate and jsonschema (--python) when they are missing.
# Prints one line per check and exits non-zero if any failed.
#
# Usage: scripts/check-deploy.sh        (from anywhere; paths are relative to the repo root)
set -euo pipefail

cd "$(dirname "$0")/.."

DEPLOY=deploy
PROM_CONFIG=$DEPLOY/prometheus.yml
ALERTS=$DEPLOY/alerts.yml
ALERTS_TEST=$DEPLOY/alerts_test.yml
METRICS=$DEPLOY/metrics.txt
DASHBOARDS=("$DEPLOY"/grafana/*.json)
KUBERNETES=$DEPLOY/kubernetes
OPERATIONS=docs/operations.md
COURIER_TOOLS="${COURIER_TOOLS:-$HOME/.cache/courier/tools}"
PYTHON="$COURIER_TOOLS/venv/bin/python"

# --- tools ----------------------------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1 || ! command -v jq >/dev/null 2>&1; then
    echo "check-deploy: promtool or jq missing, running scripts/ensure-tools.sh --prometheus"
    scripts/ensure-tools.sh --prometheus
fi
for tool in promtool jq; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check-deploy: $tool is still missing" >&2
        exit 1
    fi
done
if ! "$PYTHON" -c 'import kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1 ||
    ! cmp -s scripts/python-tools.txt "$COURIER_TOOLS/venv/courier-python-tools.txt"; then
    echo "check-deploy: the Python tools venv is missing or stale, running scripts/ensure-tools.sh --python"
    scripts/ensure-tools.sh --python
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
failures=()

# check NAME COMMAND...: runs the command, prints ok/FAIL, keeps its output for failures.
check() {
    local name=$1
    shift
    if "$@" >"$WORK/out" 2>&1; then
        printf '  ok    %s\n' "$name"
        passed=$((passed + 1))
    else
        printf '  FAIL  %s\n' "$name"
        sed 's/^/        /' "$WORK/out"
        failed=$((failed + 1))
        failures+=("$name")
    fi
}

echo "check-deploy: $(promtool --version 2>&1 | head -n1)"

# --- Prometheus -----------------------------------------------------------------------------
check "promtool check config $PROM_CONFIG" promtool check config "$PROM_CONFIG"
check "promtool check rules $ALERTS" promtool check rules "$ALERTS"
check "promtool test rules $ALERTS_TEST" promtool test rules "$ALERTS_TEST"

# Every alert carries a severity label and summary/description annotations. (promtool cannot
# dump parsed rules, so this reads the YAML the way alerts.yml is written: one key per line.)
alerts_annotated() {
    awk '
        function flush() {
            if (name != "" && !(sev && sum && desc)) {
                printf "%s: missing%s%s%s\n", name, (sev ? "" : " labels.severity"),
                    (sum ? "" : " annotations.summary"), (desc ? "" : " annotations.description")
                bad = 1
            }
        }
        /^[[:space:]]*- alert:/ { flush(); name = $3; sev = sum = desc = 0; n++; next }
        /^[[:space:]]*- record:/ { flush(); name = ""; next }
        /^[[:space:]]+severity:[[:space:]]*(critical|warning|info)[[:space:]]*$/ { sev = 1 }
        /^[[:space:]]+summary:[[:space:]]*[^[:space:]]/ { sum = 1 }
        /^[[:space:]]+description:[[:space:]]*[^[:space:]]/ { desc = 1 }
        END { flush(); if (n == 0) { print "no alerts found"; bad = 1 } exit bad }
    ' "$ALERTS"
}
check "every alert has severity, summary and description" alerts_annotated

# The PromQL of every alert: the `expr:` lines, or the indented block after `expr: |`.
alert_exprs() {
    awk '
        /^[[:space:]]*expr:/ {
            indent = match($0, /[^ ]/)
            line = $0
            sub(/^[[:space:]]*expr:[[:space:]]*([|>][-+]?)?[[:space:]]*/, "", line)
            if (line != "") print line
            inexpr = 1
            next
        }
        inexpr {
            if ($0 ~ /^[[:space:]]*$/) next
            if (match($0, /[^ ]/) > indent) { print; next }
            inexpr = 0
        }
    ' "$ALERTS"
}

# --- Grafana --------------------------------------------------------------------------------
# All panels, including those nested in (collapsed) rows; rows themselves hold no queries.
JQ_PANELS='[.panels[]? | ., (.panels[]?)] | map(select(.type != "row"))'

dashboard_json() { jq empty "$1"; }

dashboard_shape() {
    local file=$1
    jq -e '.schemaVersion >= 36' "$file" >/dev/null ||
        { echo "schemaVersion missing or older than 36"; return 1; }
    jq -e '[.templating.list[]? | select(.name == "datasource" and .type == "datasource"
            and .query == "prometheus")] | length == 1' "$file" >/dev/null ||
        { echo "no Prometheus datasource variable named datasource"; return 1; }
    jq -e "$JQ_PANELS | length > 0" "$file" >/dev/null || { echo "no panels"; return 1; }
    local bad
    bad=$(jq -r "$JQ_PANELS | .[]
        | select((.targets // []) | length == 0 or any(.[]; (.expr // \"\") == \"\"))
        | \"panel \\(.id) \\\"\\(.title)\\\": needs at least one target, each with an expr\"" "$file")
    bad+=$(jq -r "$JQ_PANELS | group_by(.id)[] | select(length > 1)
        | \"panel id \\(.[0].id) used \\(length) times\"" "$file")
    bad+=$(jq -r "$JQ_PANELS | .[] | select((.datasource.uid // \"\") != \"\${datasource}\")
        | \"panel \\(.id) \\\"\\(.title)\\\": datasource is not \${datasource}\"" "$file")
    if [ -n "$bad" ]; then
        echo "$bad"
        return 1
    fi
}

dashboard_exprs() { jq -r "$JQ_PANELS | .[].targets[]?.expr // empty" "$1"; }

# Lets promtool parse every dashboard query: each becomes a recording rule, with Grafana's
# interval variables replaced by durations.
dashboard_promql() {
    local file=$1 rules="$WORK/dashboard-rules.yml" exprs="$WORK/dashboard-exprs" i=0 expr
    dashboard_exprs "$file" >"$exprs" || return 1
    [ -s "$exprs" ] || { echo "no queries found"; return 1; }
    printf 'groups:\n  - name: dashboard\n    rules:\n' >"$rules"
    while IFS= read -r expr; do
        i=$((i + 1))
        expr=${expr//\$__rate_interval/5m}
        expr=${expr//\$__interval/1m}
        expr=${expr//\$__range/1h}
        printf '      - record: dashboard:query:%d\n        expr: |\n          %s\n' "$i" "$expr" >>"$rules"
    done <"$exprs"
    promtool check rules "$rules"
}

for dashboard in "${DASHBOARDS[@]}"; do
    [ -e "$dashboard" ] || { check "dashboards in $DEPLOY/grafana" false; continue; }
    check "$dashboard is valid JSON" dashboard_json "$dashboard"
    check "$dashboard: datasource variable, every panel has targets" dashboard_shape "$dashboard"
    check "$dashboard: every query parses as PromQL" dashboard_promql "$dashboard"
done

# --- metric names ---------------------------------------------------------------------------
# deploy/metrics.txt lists the names Courier exports, one per line, histograms by base name.
# Histograms are the *_duration_seconds names; queries use their _bucket/_sum/_count series.
metrics_list() {
    local bad
    bad=$(grep -nvE '^courier_[a-z0-9_]+$' "$METRICS" || true)
    bad+=$(sort "$METRICS" | uniq -d | sed 's/^/duplicate: /')
    if [ -n "$bad" ]; then
        echo "$bad"
        return 1
    fi
    [ -s "$METRICS" ] || { echo "$METRICS is empty"; return 1; }
}
check "$METRICS: one metric name per line" metrics_list

# Metric names in PromQL read on stdin: identifiers outside quoted strings that start with
# courier_, plus `up`.
metric_names() {
    sed -E 's/"([^"\\]|\\.)*"//g' | grep -oE '[A-Za-z_:][A-Za-z0-9_:]*' |
        grep -E '^(courier_.*|up)$' | sort -u || true
}

# names_allowed WHAT: checks the names read on stdin against the allow-list.
names_allowed() {
    local what=$1 name base bad=0 count=0
    while IFS= read -r name; do
        count=$((count + 1))
        if [ "$name" = up ]; then
            continue # recorded by Prometheus for every target
        fi
        if grep -qxF "$name" "$METRICS"; then
            if [[ "$name" == *_duration_seconds ]]; then
                echo "$what: $name is a histogram: query ${name}_bucket, _sum or _count"
                bad=1
            fi
            continue
        fi
        base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$name")
        if [ "$base" != "$name" ] && [[ "$base" == *_duration_seconds ]] &&
            grep -qxF "$base" "$METRICS"; then
            continue
        fi
        echo "$what: $name is not a metric Courier exports (not in $METRICS)"
        bad=1
    done
    if [ "$count" -eq 0 ]; then
        echo "$what: no metric names found"
        bad=1
    fi
    return "$bad"
}

alert_names() { alert_exprs | metric_names | names_allowed "$ALERTS"; }
check "$ALERTS: metric names are in $METRICS" alert_names
dashboard_names() { dashboard_exprs "$1" | metric_names | names_allowed "$1"; }
for dashboard in "${DASHBOARDS[@]}"; do
    [ -e "$dashboard" ] || continue
    check "$dashboard: metric names are in $METRICS" dashboard_names "$dashboard"
done

# --- Kubernetes -----------------------------------------------------------------------------
check "$KUBERNETES: every manifest against the Kubernetes and CRD schemas, and Courier's rules" \
    "$PYTHON" scripts/validate-manifests.py "$KUBERNETES"
check "$KUBERNETES/prometheusrule.yaml is generated from $ALERTS" \
    "$PYTHON" scripts/gen-prometheusrule.py --check

# What `kubectl apply -k` would send: kustomize's output, validated the same way.
kustomized() {
    local dir="$WORK/kustomized"
    mkdir -p "$dir"
    kubectl kustomize "$KUBERNETES" >"$dir/all.yaml" || return 1
    printf 'resources:\n  - all.yaml\n' >"$dir/kustomization.yaml"
    cp -r "$KUBERNETES/schemas" "$dir/schemas"
    "$PYTHON" scripts/validate-manifests.py --alerts "$ALERTS" "$dir"
}
if command -v kubectl >/dev/null 2>&1; then
    check "kubectl kustomize $KUBERNETES: the rendered resources validate" kustomized
else
    echo "  skip  kubectl kustomize $KUBERNETES (no kubectl here; the resources were validated one by one)"
fi

# The validator must refuse broken manifests, each for its own reason. broken NAME FILE
# SED_SCRIPT EXPECTED: a copy of deploy/kubernetes whose FILE is edited by SED_SCRIPT must fail
# validation with EXPECTED in its output.
broken() {
    local file=$1 script=$2 expected=$3 dir="$WORK/broken"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp -r "$KUBERNETES" "$dir/kubernetes"
    cp "$ALERTS" "$dir/alerts.yml"
    if [ -n "$file" ]; then
        cp "$dir/kubernetes/$file" "$dir/original"
        sed -i -e "$script" "$dir/kubernetes/$file"
        if cmp -s "$dir/original" "$dir/kubernetes/$file"; then
            echo "the edit '$script' changed nothing in $file"
            return 1
        fi
    else
        eval "$script"
    fi
    if "$PYTHON" scripts/validate-manifests.py "$dir/kubernetes" >"$dir/out" 2>&1; then
        echo "validate-manifests.py accepted it:"
        cat "$dir/out"
        return 1
    fi
    if ! grep -qF -- "$expected" "$dir/out"; then
        echo "it failed, but without '$expected':"
        cat "$dir/out"
        return 1
    fi
}
check "refused: a Deployment field of the wrong type" \
    broken api.yaml '0,/replicas: 2/s//replicas: "two"/' "spec.replicas: 'two' is not of type"
check "refused: an unknown Deployment field" \
    broken worker.yaml 's/revisionHistoryLimit:/revisionHistoryLimits:/' "'revisionHistoryLimits' was unexpected"
check "refused: an unknown ScaledObject field (KEDA CRD schema)" \
    broken worker-scaledobject.yaml 's/minReplicaCount:/minReplicas:/' "'minReplicas' was unexpected"
check "refused: a ServiceMonitor interval that is no duration (Prometheus Operator CRD schema)" \
    broken servicemonitor.yaml 's/interval: 15s/interval: fifteen/' "interval: 'fifteen' does not match"
check "refused: a kind without a schema" \
    broken servicemonitor.yaml 's/kind: ServiceMonitor/kind: ServiceMonitors/' "no schema"
check "refused: a PrometheusRule that differs from $ALERTS" \
    broken prometheusrule.yaml '0,/for: 2m/s//for: 3m/' "spec.groups differ from"
check "refused: a worker grace period that does not exceed COURIER_DRAIN_TIMEOUT_SECS" \
    broken worker.yaml 's/terminationGracePeriodSeconds: 60/terminationGracePeriodSeconds: 25/' \
    "terminationGracePeriodSeconds (25) must exceed COURIER_DRAIN_TIMEOUT_SECS (25)"
check "refused: a readiness probe on another path than /readyz" \
    broken api.yaml '0,/path: \/readyz/s//path: \/ready/' "readinessProbe must probe /readyz"
check "refused: a writable root filesystem" \
    broken worker.yaml 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' \
    "readOnlyRootFilesystem must be true"
check "refused: a resource request that is no quantity" \
    broken api.yaml 's/cpu: 250m/cpu: lots/' "resources.requests.cpu: 'lots' is not a quantity"
check "refused: a manifest that kustomization.yaml does not list" \
    broken "" 'printf "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n" >"$dir/kubernetes/extra.yaml"' \
    "extra.yaml: not listed in kustomization.yaml"

# --- runbooks -------------------------------------------------------------------------------
# Every alert has a `### AlertName` heading in docs/operations.md, and every such heading of
# the runbook section names an alert that exists.
runbooks() {
    local alert bad=0
    [ -f "$OPERATIONS" ] || { echo "$OPERATIONS missing"; return 1; }
    while IFS= read -r alert; do
        grep -qxE "### $alert" "$OPERATIONS" || { echo "$alert has no '### $alert' heading in $OPERATIONS"; bad=1; }
    done < <(grep -oE '^[[:space:]]*- alert:[[:space:]]*[A-Za-z0-9_]+' "$ALERTS" | awk '{print $3}')
    while IFS= read -r alert; do
        grep -qE "^[[:space:]]*- alert:[[:space:]]*$alert[[:space:]]*$" "$ALERTS" ||
            { echo "$OPERATIONS has a runbook for $alert, which is not an alert in $ALERTS"; bad=1; }
    done < <(grep -oE '^### Courier[A-Za-z0-9_]+$' "$OPERATIONS" | cut -c5-)
    return "$bad"
}
check "$OPERATIONS: a runbook entry for every alert in $ALERTS" runbooks

# --- summary --------------------------------------------------------------------------------
panels=0
for dashboard in "${DASHBOARDS[@]}"; do
    [ -e "$dashboard" ] || continue
    n=$(jq "$JQ_PANELS | length" "$dashboard" 2>/dev/null || true)
    panels=$((panels + ${n:-0}))
done
alerts=$(grep -cE '^[[:space:]]*- alert:' "$ALERTS" || true)
used=$( {
    alert_exprs
    for dashboard in "${DASHBOARDS[@]}"; do
        [ -e "$dashboard" ] && dashboard_exprs "$dashboard" 2>/dev/null
    done
} | metric_names | sed -E 's/_(bucket|sum|count)$//' | grep -vx up | sort -u || true)
unused=$(grep -vxF -f <(printf '%s\n' "$used") "$METRICS" || true)
echo "check-deploy: $alerts alerts, $panels dashboard panels, $(grep -c . "$METRICS") exported metrics" \
    "($(printf '%s\n' "$used" | grep -c .) used)"
if [ -n "$unused" ]; then
    echo "check-deploy: note: not used by any alert or panel: $(echo $unused)"
fi
if [ "$failed" -gt 0 ]; then
    echo "check-deploy: FAILED $failed of $((passed + failed)) checks:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "check-deploy: all $passed checks passed"
