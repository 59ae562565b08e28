#!/usr/bin/env bash
# Roll Enclave out, or upgrade it, in the order that keeps the database schema ahead of the code:
#   1. everything except the portal, worker, purge and their autoscalers (the resources labelled
#      enclave.io/rollout-phase=app): namespace, settings, Secrets, NetworkPolicies, datastores,
#      vLLM, and the migration Job `enclave db upgrade`;
#   2. wait until the migration Job has completed;
#   3. everything, which rolls the portal and workers onto the new image.
# Usage: deploy/k8s/rollout.sh deploy/k8s/overlays/single-site   (or large-cluster, or your own)
set -euo pipefail

overlay=${1:?usage: $0 deploy/k8s/overlays/<overlay>}
namespace=${ENCLAVE_NAMESPACE:-enclave}
here=$(cd "$(dirname "$0")" && pwd)

# Placeholder secrets must never reach a cluster.
if placeholders=$(grep -l 'CHANGE-ME' "$here"/base/*.env "$overlay"/*.env 2>/dev/null); then
    echo "refusing to roll out: replace the CHANGE-ME values in:" >&2
    echo "$placeholders" >&2
    exit 1
fi

# A Job's pod template cannot change; the previous migration run goes first.
kubectl -n "$namespace" delete job enclave-migrate --ignore-not-found --wait=true

kubectl apply -k "$overlay" -l 'enclave.io/rollout-phase!=app'

if ! kubectl -n "$namespace" get service qdrant >/dev/null 2>&1; then
    echo "note: no Service 'qdrant' in namespace $namespace yet: install the Qdrant Helm release" >&2
    echo "      (deploy/k8s/qdrant-values.yaml) before the portal can become ready." >&2
fi

echo "waiting for the migration (enclave db upgrade) ..."
deadline=$((SECONDS + ${ENCLAVE_MIGRATION_TIMEOUT_SECONDS:-1800}))
until [ "$(kubectl -n "$namespace" get job enclave-migrate -o 'jsonpath={.status.succeeded}')" = "1" ]; do
    failed=$(kubectl -n "$namespace" get job enclave-migrate \
        -o 'jsonpath={.status.conditions[?(@.type=="Failed")].status}')
    if [ "$failed" = "True" ] || [ "$SECONDS" -ge "$deadline" ]; then
        echo "the migration did not complete; the portal and workers were left as they were." >&2
        kubectl -n "$namespace" logs job/enclave-migrate --tail=50 >&2 || true
        exit 1
    fi
    sleep 5
done

kubectl apply -k "$overlay"
kubectl -n "$namespace" rollout status deployment/enclave-portal --timeout=15m
kubectl -n "$namespace" rollout status deployment/enclave-worker --timeout=15m
