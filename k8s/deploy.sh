#!/usr/bin/env bash
# Applies a rendered overlay (make k8s) to the current kubeconfig context.
#
# The models ConfigMap is created on the first deploy only: after that
# `bgremove rollout` moves its version labels, and a redeploy (new image, new
# batching) must not undo a canary or a rollback.  --reset-models-config
# applies only the rendered models ConfigMap, over whatever is live.
#
# usage: k8s/deploy.sh OVERLAY [--reset-models-config]   ($KUBECTL, $K8S_DIR override)
set -euo pipefail

usage="usage: k8s/deploy.sh OVERLAY [--reset-models-config]"
if [[ $# -lt 1 || $# -gt 2 || ($# -eq 2 && $2 != --reset-models-config) ]]; then
  echo "$usage" >&2
  exit 2
fi
overlay=$1
dir=${K8S_DIR:-build/k8s}
kubectl=${KUBECTL:-kubectl}
workload="$dir/$overlay.yaml"
models="$dir/$overlay-models-config.yaml"

for file in "$workload" "$models"; do
  [[ -f $file ]] || { echo "error: $file is missing; run make k8s first" >&2; exit 2; }
done

if [[ $# -eq 2 ]]; then
  "$kubectl" apply -f "$models"
  exit 0
fi
"$kubectl" apply -f "$workload"
# Only "not found" counts as missing; any other error (RBAC, wrong context) stops here.
live=$("$kubectl" get --ignore-not-found -f "$models" -o name)
if [[ -n $live ]]; then
  echo "kept the live models config (bgremove rollout edits it); make deploy-models-config replaces it"
else
  "$kubectl" create --save-config -f "$models"
fi
