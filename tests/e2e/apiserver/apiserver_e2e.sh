#!/bin/bash
# meshsim's Kubernetes API server against the real clients: Debian's kubectl
# (1.20) and, when it differs, the system's /usr/bin/kubectl (1.32), and
# python3-kubernetes. Also the fault controls (stop/start, compact → 410, watch
# closing, CRD removal), RBAC for the agent's token from a node netns, the
# manifest mirror, the nft rules following Services, a synthetic cluster, the node
# agents' pods and a TokenReview of a pod-bound token from `meshsim token`.
set -uo pipefail
MSIM_TEST=apiserver-e2e
. "$MESHLOCK_SOURCE_DIR/tests/sim/lib.sh"
HERE=$MESHLOCK_SOURCE_DIR/tests/e2e/apiserver
TMP=$(mktemp -d /tmp/msim-api-e2e.XXXXXX)
FAILS=0
fail() { msim_log "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { msim_log "ok: $*"; }
msim_extra_cleanup() { rm -rf "$TMP"; }

KUBECTL_DEBIAN=${KUBECTL:-$MESHLOCK_BIN_DIR/../tools/kubernetes-client/usr/bin/kubectl}
[ -x "$KUBECTL_DEBIAN" ] || { msim_log "Debian's kubectl not found at $KUBECTL_DEBIAN (run make deps)"; exit 1; }
KUBECTLS=("$KUBECTL_DEBIAN")
if [ -x /usr/bin/kubectl ] && ! cmp -s "$(readlink -f "$KUBECTL_DEBIAN")" /usr/bin/kubectl; then KUBECTLS+=(/usr/bin/kubectl); fi

msim_up "$HERE/spec.yaml" api >/dev/null || { msim_log "meshsim up failed"; exit 1; }
KC=$("$MSIM" kubeconfig)
AGENT_KC=$("$MSIM" kubeconfig --agent)
KUBE=$(dirname "$KC")
NODE_NETNS=/run/netns/msim-${MSIM_RUN}_node_node-a
URL=$("$MSIM" status -o json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["apiServer"]["url"])')
ADMIN_TOKEN=$(/usr/bin/python3 -c 'import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))["users"][0]["user"]["token"])' "$KC")
api_curl() { curl -sS --max-time "${CURL_TIME:-10}" --cacert "$KUBE/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$@"; }

[ "$(msim_kubectl get ns shop -o name 2>&1)" = namespace/shop ] && ok "msim_kubectl" || fail "msim_kubectl"

n=0
for K in "${KUBECTLS[@]}"; do
  n=$((n + 1))
  export HOME=$TMP/home-$n
  mkdir -p "$HOME"
  k() { "$K" --kubeconfig "$KC" --cache-dir "$TMP/cache-$n" "$@"; }
  v=$("$K" version --client --short 2>/dev/null || "$K" version --client 2>/dev/null | head -1)
  msim_log "kubectl $K ($v)"

  out=$(k get pods -A 2>&1)
  if grep -q "shop *web *1/1 *Running" <<<"$out" && grep -q "shop *client" <<<"$out"; then ok "get -A"; else fail "get -A: $out"; fi
  out=$(k get ns 2>&1)
  grep -q kube-system <<<"$out" && grep -q "istio-system *Active" <<<"$out" && ok "get ns" || fail "get ns: $out"

  # get -w sees ADDED, MODIFIED and DELETED of a pod made, labeled and deleted meanwhile.
  timeout 20 "$K" --kubeconfig "$KC" --cache-dir "$TMP/cache-$n" get pods -n shop -w --output-watch-events \
    >"$TMP/watch-$n" 2>&1 &
  wpid=$!
  for i in $(seq 50); do grep -q web "$TMP/watch-$n" && break; sleep 0.2; done
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: shop}\nspec: {containers: [{name: a, image: x}]}\n' |
    k apply -f - >/dev/null || fail "apply pod"
  k label pod -n shop extra seen=yes >/dev/null || fail "label pod"
  k delete pod -n shop extra >/dev/null || fail "delete pod"
  for i in $(seq 50); do grep -q "DELETED *extra" "$TMP/watch-$n" && break; sleep 0.2; done
  kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null
  if grep -q "ADDED *extra" "$TMP/watch-$n" && grep -q "MODIFIED *extra" "$TMP/watch-$n" &&
    grep -q "DELETED *extra" "$TMP/watch-$n"; then ok "get -w"; else fail "get -w: $(cat "$TMP/watch-$n")"; fi

  # apply -f of every seed's YAML: created, then unchanged; served at every version.
  for f in "$HERE"/seeds/*.yaml; do
    out=$(k apply -f "$f" 2>&1) && grep -q created <<<"$out" || fail "apply $(basename "$f"): $out"
    out=$(k apply -f "$f" 2>&1) && grep -q unchanged <<<"$out" || fail "re-apply $(basename "$f"): $out"
  done
  out=$(k get peerauthentications -A 2>&1)
  [ "$(grep -c default <<<"$out")" = 2 ] && ok "apply seeds" || fail "seeds: $out"
  out=$(k get smcp -n istio-system basic -o jsonpath='{.apiVersion} {.spec.security.dataPlane.mtls}' 2>&1)
  [ "$out" = "maistra.io/v2 true" ] && ok "SMCP v1 served as v2" || fail "SMCP v2: $out"
  out=$(k get servicemeshcontrolplanes.v1.maistra.io -n istio-system basic -o jsonpath='{.spec.istio.global.mtls.enabled}' 2>&1)
  [ "$out" = "true" ] && ok "SMCP served as v1" || fail "SMCP v1: $out"
  out=$(k get destinationrules.v1alpha3.networking.istio.io -n istio-system default -o jsonpath='{.apiVersion}' 2>&1)
  [ "$out" = "networking.istio.io/v1alpha3" ] && ok "DestinationRule at v1alpha3" || fail "DR v1alpha3: $out"

  k label namespace shop team=pay --overwrite >/dev/null || fail "label namespace"
  out=$(k get ns -l 'team in (pay),meshlock.io/mtls=enabled' -o name 2>&1)
  [ "$out" = "namespace/shop" ] && ok "label namespace + set-based selector" || fail "label namespace: $out"
  k label namespace shop team- >/dev/null
  # Every Running pod of node-a: web and the node agent's pod.
  out=$(k get pods -A --field-selector spec.nodeName=node-a,status.phase=Running -o name 2>&1)
  [ "$out" = $'pod/meshlock-agent-node-a\npod/web' ] && ok "field selector" || fail "field selector: $out"
  out=$(k get pods -A --field-selector spec.bogus=x 2>&1)
  grep -q "field label not supported" <<<"$out" && ok "bad field selector refused" || fail "bad field selector: $out"

  for f in "$HERE"/seeds/*.yaml; do k delete -f "$f" >/dev/null 2>&1 || fail "delete -f $(basename "$f")"; done
  out=$(k get peerauthentications,destinationrules -A 2>&1)
  grep -q "No resources found" <<<"$out" && ok "delete" || fail "delete: $out"
done
KD() { "$KUBECTL_DEBIAN" --kubeconfig "$KC" --cache-dir "$TMP/cache-1" "$@"; }

# meshsim apply/delete/label go through the API and the mirror follows.
MAN=/run/meshsim/$MSIM_RUN/manifests
"$MSIM" apply "$HERE/seeds/003-namespace.yaml" >"$TMP/apply.out" || fail "meshsim apply"
grep -q "PeerAuthentication/shop/default created" "$TMP/apply.out" && grep -q STRICT "$MAN/peerauthentication.security.istio.io.yaml" &&
  ok "meshsim apply + mirror" || fail "meshsim apply: $(cat "$TMP/apply.out"); $(ls "$MAN")"
"$MSIM" delete "$HERE/seeds/003-namespace.yaml" >/dev/null || fail "meshsim delete"
[ ! -e "$MAN/peerauthentication.security.istio.io.yaml" ] && ok "meshsim delete + mirror" || fail "mirror kept the deleted kind"
"$MSIM" delete "$HERE/seeds/003-namespace.yaml" >/dev/null 2>&1 && fail "delete of a missing object succeeded"
"$MSIM" delete "$HERE/seeds/003-namespace.yaml" --ignore-not-found >/dev/null 2>&1 || fail "delete --ignore-not-found failed"

# The nft rules follow pod labels and Services changed through the API.
nft_web() { ip netns exec "msim-${MSIM_RUN}_node_node-a" nft list table ip meshsim | grep "10.96.10.10 tcp dport 80"; }
"$MSIM" label pod shop/web app=other >/dev/null || fail "meshsim label pod"
nft_web | grep -q reject && ok "label pod: service without backends" || fail "label pod: $(nft_web)"
"$MSIM" label pod shop/web app=web >/dev/null
nft_web | grep -q dnat && ok "label pod back: DNAT" || fail "label pod back: $(nft_web)"
msim_serve shop/web 8080 || fail "serve"
printf 'apiVersion: v1\nkind: Service\nmetadata: {name: web2, namespace: shop}\nspec: {clusterIP: 10.96.10.20, selector: {app: web}, ports: [{port: 81, targetPort: 8080}]}\n' |
  KD apply -f - >/dev/null || fail "apply service"
for i in $(seq 50); do msim_send shop/client 10.96.10.20:81 1000 >/dev/null 2>&1 && break; sleep 0.1; done
msim_send shop/client web2.shop:81 1000 >/dev/null && ok "Service made with kubectl is reachable by ClusterIP and name" ||
  fail "Service from the API not reachable"
KD get endpointslices -n shop -l kubernetes.io/service-name=web2 -o jsonpath='{.items[0].endpoints[0].addresses[0]}' |
  grep -q 10.244.1 && ok "EndpointSlice for a new Service" || fail "no EndpointSlice for web2"
KD delete service -n shop web2 >/dev/null
for i in $(seq 50); do msim_send shop/client 10.96.10.20:81 10 >/dev/null 2>&1 || break; sleep 0.1; done
msim_send shop/client 10.96.10.20:81 10 >/dev/null 2>&1 && fail "deleted Service still answers" || ok "deleted Service gone from the rules"

# The agent's token from a node netns: RBAC from deploy/daemonset/base/rbac.yaml.
KA() { nsenter --net="$NODE_NETNS" "$KUBECTL_DEBIAN" --kubeconfig "$AGENT_KC" --cache-dir "$TMP/cache-agent" "$@"; }
out=$(KA get pods -A 2>&1) && grep -q web <<<"$out" && ok "agent lists pods from the node netns" || fail "agent list: $out"
out=$(KA delete pod -n shop web 2>&1) && fail "agent could delete a pod"
grep -q 'Forbidden.*cannot delete resource "pods"' <<<"$out" && ok "agent delete: 403" || fail "agent delete: $out"
out=$(KA get secrets -A 2>&1); grep -q Forbidden <<<"$out" && ok "agent cannot list secrets: 403" || fail "agent secrets: $out"
out=$(KA get secrets -n shop --watch --request-timeout=2s 2>&1); grep -q Forbidden <<<"$out" && ok "agent cannot watch secrets: 403" || fail "agent watch secrets: $out"
# get by name only: the Secrets a credentialName names (rbac.yaml).
msim_kubectl create secret generic -n shop named-one --from-literal=cacert=x >/dev/null
out=$(KA get secret -n shop named-one -o name 2>&1) && [ "$out" = secret/named-one ] && ok "agent gets a secret by name" || fail "agent get secret: $out"
msim_kubectl delete secret -n shop named-one >/dev/null
SA=$KUBE/serviceaccount
code=$(nsenter --net="$NODE_NETNS" curl -s -o /dev/null -w '%{http_code}' --cacert "$SA/ca.crt" \
  -H "Authorization: Bearer $(cat "$SA/token")" https://172.18.0.1:6443/api/v1/namespaces)
[ "$code" = 200 ] && ok "in-cluster service account dir" || fail "service account token: HTTP $code"
old=$(cat "$SA/token")
"$MSIM" apiserver rotate-agent-token >/dev/null || fail "rotate"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$SA/ca.crt" -H "Authorization: Bearer $old" "$URL/api/v1/pods")
code2=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$SA/ca.crt" -H "Authorization: Bearer $(cat "$SA/token")" "$URL/api/v1/pods")
[ "$code $code2" = "401 200" ] && ok "token rotation" || fail "rotation: old $code new $code2"

# The node agents as pods (API objects only) and their pod-bound tokens, which a
# TokenReview maps to the node; creating one needs RBAC the agent does not have.
out=$(KD get pods -n meshlock-system -l app=meshlock-agent \
  -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.spec.hostNetwork} {.status.phase}{"\n"}{end}' 2>&1)
[ "$out" = $'meshlock-agent-node-a node-a true Running\nmeshlock-agent-node-b node-b true Running' ] && ok "agent pods" ||
  fail "agent pods: $out"
if ip netns list | grep -q meshlock-agent || grep -q meshlock-agent "$MAN/pod.yaml"; then fail "agent pods realized or mirrored"
else ok "agent pods: no netns, not in the mirror"; fi
out=$("$MSIM" token --namespace meshlock-system --service-account meshlock-agent --pod meshlock-agent-node-a \
  --audience istio-ca --file "$TMP/agent-a.token" 2>&1)
[ "$out" = "$TMP/agent-a.token" ] && [ "$(stat -c %a "$TMP/agent-a.token")" = 600 ] && ok "meshsim token --file" ||
  fail "meshsim token: $out"
printf 'apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: "%s"\n  audiences: [istio-ca]\n' \
  "$(cat "$TMP/agent-a.token")" >"$TMP/review.yaml"
review_node() {
  KD create -f "$TMP/review.yaml" -o json | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin)["status"]
print(s.get("authenticated"), s["user"].get("username"), s["user"].get("extra", {}).get("authentication.kubernetes.io/node-name"), s.get("audiences"))'
}
out=$(review_node 2>&1)
[ "$out" = "True system:serviceaccount:meshlock-system:meshlock-agent ['node-a'] ['istio-ca']" ] &&
  ok "TokenReview of the agent's bound token names node-a" || fail "TokenReview: $out"
out=$(KA create -f "$TMP/review.yaml" 2>&1) && fail "the agent could create a TokenReview"
grep -q 'cannot create resource "tokenreviews"' <<<"$out" && ok "TokenReview without RBAC: 403" || fail "agent TokenReview: $out"

# Python client (Debian's python3-kubernetes): list and watch.
KC="$KC" /usr/bin/python3 - <<'EOF' >"$TMP/py.out" 2>&1 && ok "python3-kubernetes list + watch" || fail "python client: $(cat "$TMP/py.out")"
import os, subprocess, threading
from kubernetes import client, config, watch
kc = os.environ["KC"]
api = client.CoreV1Api(config.new_client_from_config(kc))
pods = api.list_pod_for_all_namespaces()
assert "web" in [p.metadata.name for p in pods.items], pods
def change():
    api.patch_namespaced_pod("client", "shop", {"metadata": {"labels": {"py": "seen"}}})
threading.Timer(0.5, change).start()
for ev in watch.Watch().stream(api.list_pod_for_all_namespaces, resource_version=pods.metadata.resource_version, timeout_seconds=10):
    if ev["type"] == "MODIFIED" and ev["object"].metadata.labels.get("py") == "seen":
        break
else:
    raise SystemExit("no MODIFIED event")
crs = client.CustomObjectsApi(config.new_client_from_config(kc)).list_cluster_custom_object("sailoperator.io", "v1", "istios")
assert crs["kind"] == "IstioList", crs
EOF

# Restart: objects and resourceVersions survive; the counter continues.
rv_before=$(KD get pod -n shop web -o jsonpath='{.metadata.resourceVersion}')
uid_before=$(KD get pod -n shop web -o jsonpath='{.metadata.uid}')
"$MSIM" apiserver stop >/dev/null || fail "apiserver stop"
KD get pods -A >/dev/null 2>&1 && fail "kubectl works with the server stopped"
"$MSIM" apiserver status | grep -q '"running": false' || fail "status while stopped"
"$MSIM" apiserver start >/dev/null || fail "apiserver start"
rv_after=$(KD get pod -n shop web -o jsonpath='{.metadata.resourceVersion}')
uid_after=$(KD get pod -n shop web -o jsonpath='{.metadata.uid}')
KD label pod -n shop web restarted=yes >/dev/null
rv_new=$(KD get pod -n shop web -o jsonpath='{.metadata.resourceVersion}')
list_rv=$(api_curl "$URL/api/v1/pods?limit=1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
if [ "$rv_before" = "$rv_after" ] && [ "$uid_before" = "$uid_after" ] && [ "$rv_new" -gt "$rv_before" ]; then
  ok "restart keeps objects and resourceVersions ($rv_before → $rv_new)"
else fail "restart: rv $rv_before/$rv_after/$rv_new uid $uid_before/$uid_after"; fi
out=$(review_node 2>&1)
grep -q "^True .*\['node-a'\]" <<<"$out" && ok "a bound token survives the restart" || fail "token after restart: $out"

# A watch resumed from before a compaction gets 410 Expired.
out=$(CURL_TIME=3 api_curl "$URL/api/v1/pods?watch=true&resourceVersion=$list_rv&timeoutSeconds=1")
grep -q '"type":"MODIFIED"' <<<"$out" || KD label pod -n shop web resumed=yes >/dev/null
"$MSIM" apiserver compact >/dev/null || fail "compact"
out=$(CURL_TIME=5 api_curl "$URL/api/v1/pods?watch=true&resourceVersion=$list_rv")
grep -q '"type":"ERROR".*"code":410' <<<"$out" && grep -q Expired <<<"$out" && ok "compact → 410 Expired" || fail "410: $out"

# The server closes every watch after N seconds when asked to.
"$MSIM" apiserver set watchCloseAfterSeconds=1 >/dev/null || fail "set"
t0=$(date +%s)
CURL_TIME=20 api_curl "$URL/api/v1/pods?watch=true" >/dev/null
[ $(($(date +%s) - t0)) -le 4 ] && ok "watchCloseAfterSeconds" || fail "watch was not closed after 1 s"
"$MSIM" apiserver set watchCloseAfterSeconds=0 >/dev/null

# A CRD deleted makes its kind disappear; applied again, it is back.
KD get crd sidecars.networking.istio.io -o yaml >"$TMP/crd.yaml"
KD delete crd sidecars.networking.istio.io >/dev/null || fail "delete crd"
out=$(KD get sidecars -A 2>&1) && fail "sidecars still served: $out"
# A fresh discovery says the type is gone; kubectl's cached discovery gets the 404 of the list.
grep -Eq "doesn't have a resource type|NotFound" <<<"$out" && ok "deleted CRD: kind gone" || fail "deleted CRD: $out"
KD apply -f "$TMP/crd.yaml" >/dev/null 2>&1 || KD create -f "$TMP/crd.yaml" >/dev/null || fail "re-create crd"
KD get sidecars -A >/dev/null 2>&1 && ok "CRD applied again: kind back" || fail "CRD not back"

# A synthetic cluster (no netns): pagination of a large list.
"$MSIM" apiserver synthetic pods=2000 services=200 policies=200 >"$TMP/synth.out" || fail "synthetic: $(cat "$TMP/synth.out")"
t0=$(date +%s%N)
count=$(KD get pods -A --chunk-size=500 --no-headers | wc -l)
ms=$((($(date +%s%N) - t0) / 1000000))
# 2,000 synthetic pods, web and client, and the two node agents' pods.
[ "$count" = 2004 ] && ok "synthetic: kubectl lists $count pods in pages of 500 in ${ms} ms" || fail "synthetic count $count"
[ ! -e "$MAN/../manifests/pod.yaml" ] || ! grep -q "pod-1999" "$MAN/pod.yaml" && ok "synthetic pods stay out of the mirror" ||
  fail "synthetic pods mirrored"

"$MSIM" status -o json | grep -q '"running": true' || fail "status -o json apiServer.running"
pid=$("$MSIM" apiserver status | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
"$MSIM" down >/dev/null || fail "down"
MSIM_RUN=""
sleep 0.2
if [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]; then fail "API server pid $pid survived down"
else ok "down stops the API server"; fi

[ "$FAILS" = 0 ] && msim_log "all passed" || msim_log "$FAILS failure(s)"
[ "$FAILS" = 0 ]
