#!/usr/bin/env bash
# check.sh MODE KUBECTL VALIDATOR_DIR SOURCE_DIR: renders deploy/daemonset, its
# OpenShift overlay and its meshlock-ca overlay (with deploy/ca) with kubectl's
# kustomize, then
#   schema:   validates every object against the OpenAPI schemas (validate.mjs)
#   rules:    applies the API server's rules (api_rules.py)
#   negative: proves both reject broken manifests (negative_test.py)
set -euo pipefail
mode=$1 kubectl=$2 validator=$3 src=$4
here=$(cd "$(dirname "$0")" && pwd)
command -v "$kubectl" >/dev/null || { echo "kubectl not found ($kubectl): install kubernetes-client (make deps)"; exit 1; }
[ -d "$validator/node_modules/kubernetes-models" ] ||
  { echo "the validator is not installed in $validator: the build runs npm ci there (needs npm once)"; exit 1; }
out=$(mktemp -d /tmp/meshlock-deploy.XXXXXX)
trap 'rm -rf "$out"' EXIT
for target in base:deploy/daemonset openshift:deploy/daemonset/overlays/openshift \
    meshlock-ca:deploy/daemonset/overlays/meshlock-ca; do
  name=${target%%:*} dir=$src/${target#*:}
  # kustomize's deprecation notes (bases, patchesJson6902) go to stderr.
  "$kubectl" kustomize "$dir" >"$out/$name.yaml" 2>"$out/$name.err" ||
    { cat "$out/$name.err"; echo "FAIL: kubectl kustomize $dir"; exit 1; }
  echo "rendered $dir: $(grep -c '^kind:' "$out/$name.yaml") objects"
done
case $mode in
  schema)
    node "$here/validate.mjs" --modules "$validator" "$out/base.yaml"
    node "$here/validate.mjs" --modules "$validator" "$out/meshlock-ca.yaml"
    node "$here/validate.mjs" --modules "$validator" --allow-kind security.openshift.io/v1/SecurityContextConstraints \
      "$out/openshift.yaml" ;;
  rules)
    /usr/bin/python3 "$here/api_rules.py" "$out/base.yaml"
    /usr/bin/python3 "$here/api_rules.py" "$out/openshift.yaml"
    /usr/bin/python3 "$here/api_rules.py" "$out/meshlock-ca.yaml" ;;
  negative)
    /usr/bin/python3 "$here/negative_test.py" "$out/base.yaml" "$out/openshift.yaml" "$validator" ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
