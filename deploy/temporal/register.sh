#!/bin/sh
# One-shot registration (temporal-register service): waits for the Temporal
# frontend to report healthy, creates hitl's namespace if it is missing, and
# registers the search attributes hitl's workflows upsert. Idempotent: an
# existing namespace is left as it is, and the server skips search attributes
# that already exist with the same type (a different type is an error).
#
# Runs in temporalio/admin-tools; the `temporal` CLI reads TEMPORAL_ADDRESS.
set -eu

: "${TEMPORAL_ADDRESS:?}"
NAMESPACE="${HITL_NAMESPACE:-default}"
RETENTION="${NAMESPACE_RETENTION:-168h}"
ATTEMPTS="${REGISTER_ATTEMPTS:-60}"
SLEEP_SECONDS=2

retry() {
    attempt=1
    until "$@"; do
        if [ "$attempt" -ge "$ATTEMPTS" ]; then
            echo "giving up after $ATTEMPTS attempts: $*" >&2
            return 1
        fi
        attempt=$((attempt + 1))
        sleep "$SLEEP_SECONDS"
    done
}

ensure_namespace() {
    temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1 ||
        temporal operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION"
}

echo "Waiting for Temporal at $TEMPORAL_ADDRESS"
retry temporal operator cluster health
retry ensure_namespace
echo "Namespace $NAMESPACE is registered"

# Keep in step with hitl/search_attributes.py (tests/test_compose.py checks it).
retry temporal operator search-attribute create --namespace "$NAMESPACE" \
    --name HitlTaskType --type Keyword \
    --name HitlRisk --type Keyword \
    --name HitlZone --type Keyword \
    --name HitlStatus --type Keyword \
    --name HitlConfidence --type Double \
    --name HitlSlaDeadline --type Datetime \
    --name HitlPriority --type Int

temporal operator search-attribute list --namespace "$NAMESPACE"
echo "Registration complete"
