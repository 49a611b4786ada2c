#!/usr/bin/env bash
# Applies a rendered overlay (make k8s) to the current kubeconfig context.
#
# The models ConfigMap is created on the first deploy only: after that
# `bgremove rollout` moves its version labels, and a redeploy (new image, new
# batching) must not undo a canary or a rollback.  --reset-models-config
# replaces it with the repository's k8s/base/config/models.config.
#
# usage: k8s/deploy.sh OVERLAY [--reset-models-config]   ($KUBECTL, $K8S_DIR override)
set -euo pipefail

overlay=${1:?usage: k8s/deploy.sh OVERLAY [--reset-models-config]}
reset=${2:-}
dir=${K8S_DIR:-build/k8s}
kubectl=${KUBECTL:-kubectl}
models="$dir/$overlay-models-config.yaml"

for file in "$dir/$overlay.yaml" "$models"; do
  [[ -f $file ]] || { echo "error: $file is missing; run make k8s first" >&2; exit 2; }
done

"$kubectl" apply -f "$dir/$overlay.yaml"
if [[ $reset == --reset-models-config ]]; then
  "$kubectl" apply -f "$models"
elif [[ -n $reset ]]; then
  echo "error: unknown option $reset" >&2
  exit 2
elif "$kubectl" get -f "$models" -o name >/dev/null 2>&1; then
  echo "kept the live models config (bgremove rollout edits it); make deploy-models-config replaces it"
else
  "$kubectl" create --save-config -f "$models"
fi
