#!/usr/bin/env bash
# Real-cluster end-to-end run: a kind cluster, the hub image built from this checkout, the
# zero-to-jupyterhub chart 4.4.0 installed with helm-values/values.yaml (RBAC, admission
# policies and the launcher/culler Deployments from helm-values/rbac and services), then
# `pytest tests/e2e tests/integration` against that cluster (KDASH_TEST_KUBECONFIG).
#
# Needs docker (a running engine), kind, helm and kubectl. Used by .github/workflows/e2e.yml;
# runs the same on a workstation. Cleans up the cluster unless KDASH_E2E_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${KDASH_E2E_CLUSTER:-kdash-e2e}
NAMESPACE=${KDASH_E2E_NAMESPACE:-jhub}
RELEASE=${KDASH_E2E_RELEASE:-jhub}
CHART_VERSION=${KDASH_E2E_CHART_VERSION:-4.4.0}
IMAGE_NAME=kdash-hub/k8s-hub
IMAGE_TAG=e2e
PROXY_PORT=${KDASH_E2E_PROXY_PORT:-18080}
PYTHON=${PYTHON:-.venv/bin/python}
ARTIFACTS=${KDASH_E2E_ARTIFACTS:-artifacts/e2e}

need() { command -v "$1" >/dev/null 2>&1 || { echo "kind-e2e: '$1' is required: $2" >&2; exit 2; }; }
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need helm "https://helm.sh/docs/intro/install/"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
docker info >/dev/null 2>&1 || { echo "kind-e2e: no Docker engine is running" >&2; exit 2; }

mkdir -p "$ARTIFACTS"
export KUBECONFIG="$PWD/$ARTIFACTS/kubeconfig"
PF_PID=""
cleanup() {
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  kubectl -n "$NAMESPACE" logs deploy/hub --all-containers > "$ARTIFACTS/hub.log" 2>&1 || true
  kubectl -n "$NAMESPACE" logs deploy/kdash-launcher > "$ARTIFACTS/launcher.log" 2>&1 || true
  kubectl -n "$NAMESPACE" logs deploy/kdash-culler > "$ARTIFACTS/culler.log" 2>&1 || true
  kubectl get all,networkpolicy,resourcequota,limitrange -A > "$ARTIFACTS/objects.txt" 2>&1 || true
  if [ "${KDASH_E2E_KEEP:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" || true; fi
}
trap cleanup EXIT

echo "== kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 180s
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

echo "== hub image $IMAGE_NAME:$IMAGE_TAG"
docker build -f helm-values/hub-image/Dockerfile -t "$IMAGE_NAME:$IMAGE_TAG" .
kind load docker-image "$IMAGE_NAME:$IMAGE_TAG" --name "$CLUSTER"

echo "== RBAC and admission policies"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
for f in helm-values/rbac/*.yaml; do sed "s/jhub/$NAMESPACE/g" "$f"; echo "---"; done \
  | kubectl apply -f -

echo "== the launcher's and the culler's configuration and record signing key"
"$PYTHON" -m kdash_hub.z2jh custom -f helm-values/values.yaml -f helm-values/e2e/kind-values.yaml \
  > "$ARTIFACTS/custom.yaml"
kubectl -n "$NAMESPACE" create configmap kdash-config --from-file=custom.yaml="$ARTIFACTS/custom.yaml" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" get secret kdash-launcher-records >/dev/null 2>&1 || \
  kubectl -n "$NAMESPACE" create secret generic kdash-launcher-records \
    --from-literal=signing-key="$(openssl rand -hex 32)"

echo "== jupyterhub chart $CHART_VERSION"
API_TOKEN=$(openssl rand -hex 32)
helm upgrade --install "$RELEASE" jupyterhub \
  --repo https://hub.jupyter.org/helm-chart/ --version "$CHART_VERSION" \
  --namespace "$NAMESPACE" \
  --values helm-values/values.yaml \
  --values helm-values/e2e/kind-values.yaml \
  --set hub.image.name="$IMAGE_NAME" --set hub.image.tag="$IMAGE_TAG" \
  --set hub.services.kdash-e2e.apiToken="$API_TOKEN" \
  --wait --timeout 10m

echo "== the launcher and the culler, each with its own ServiceAccount"
for f in helm-values/services/*.yaml; do
  sed -e "s/jhub/$NAMESPACE/g" -e "s|image: kdash-hub/k8s-hub:.*|image: $IMAGE_NAME:$IMAGE_TAG|" "$f"
  echo "---"
done | kubectl apply -f -
for d in kdash-launcher kdash-culler; do
  kubectl -n "$NAMESPACE" rollout status "deploy/$d" --timeout 5m
done

kubectl -n "$NAMESPACE" port-forward svc/proxy-public "$PROXY_PORT:80" >"$ARTIFACTS/port-forward.log" 2>&1 &
PF_PID=$!
for _ in $(seq 60); do
  curl -fsS "http://127.0.0.1:$PROXY_PORT/hub/api/" >/dev/null 2>&1 && break
  sleep 1
done

echo "== tests"
KDASH_TEST_KUBECONFIG="$KUBECONFIG" \
KDASH_E2E_HUB_URL="http://127.0.0.1:$PROXY_PORT" \
KDASH_E2E_API_TOKEN="$API_TOKEN" \
KDASH_E2E_NAMESPACE="$NAMESPACE" \
  "$PYTHON" -m pytest -ra tests/e2e tests/integration "$@"
