#!/usr/bin/python3
"""meshsim-apiserver: init | serve | start | stop | status | ctl | rotate-agent-token |
token. `meshsim` runs it with Debian's /usr/bin/python3; everything lives in a run's
kube directory (/run/meshsim/RUN/kube): config.json, pki/ (with sa.key, which signs
service-account tokens), tokens.csv, data/, kubeconfigs, serviceaccount/,
apiserver.json (pid and URLs while running), apiserver.log."""
import argparse
import base64
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


AGENT_USER = "system:serviceaccount:meshlock-system:meshlock-agent"
FABRIC_IP, FABRIC_PORT = "172.18.0.1", 6443


def write_atomic(path, text, mode=0o600):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_config(kube_dir):
    with open(os.path.join(kube_dir, "config.json")) as f:
        return json.load(f)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_pki(pki, run):
    os.makedirs(pki, exist_ok=True)
    ca_key, ca_crt = os.path.join(pki, "ca.key"), os.path.join(pki, "ca.crt")
    key, csr, crt = (os.path.join(pki, n) for n in ("apiserver.key", "apiserver.csr", "apiserver.crt"))
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca_key,
            "-out", ca_crt, "-days", "3650", "-subj", f"/CN=meshsim-{run}-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=kube-apiserver")
    ext = os.path.join(pki, "apiserver.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,IP:172.18.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days",
            "3650", "-extfile", ext)
    return ca_crt, crt, key


def kubeconfig(run, server, ca_pem, user, token):
    import yaml
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": f"meshsim-{run}", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"meshsim-{run}", "context": {"cluster": f"meshsim-{run}", "user": user}}],
        "current-context": f"meshsim-{run}", "preferences": {}}, sort_keys=False)


def write_tokens(cfg, admin, agent):
    write_atomic(cfg["tokenFile"], f'{admin},admin,admin-uid,"system:masters"\n'
                                   f'{agent},{AGENT_USER},meshlock-agent-uid,'
                                   '"system:serviceaccounts,system:serviceaccounts:meshlock-system"\n')
    kube = cfg["kubeDir"]
    with open(cfg["caFile"], "rb") as f:
        ca = f.read()
    write_atomic(os.path.join(kube, "admin.kubeconfig"),
                 kubeconfig(cfg["run"], f"https://127.0.0.1:{cfg['hostPort']}", ca, "admin", admin))
    write_atomic(os.path.join(kube, "agent.kubeconfig"),
                 kubeconfig(cfg["run"], f"https://{FABRIC_IP}:{FABRIC_PORT}", ca, "meshlock-agent", agent))
    sa = os.path.join(kube, "serviceaccount")
    os.makedirs(sa, exist_ok=True)
    write_atomic(os.path.join(sa, "token"), agent, 0o644)
    write_atomic(os.path.join(sa, "ca.crt"), ca.decode(), 0o644)
    write_atomic(os.path.join(sa, "namespace"), "meshlock-system", 0o644)


def cmd_init(a):
    kube = os.path.abspath(a.kube_dir)
    os.makedirs(kube, mode=0o700, exist_ok=True)
    ca, crt, key = make_pki(os.path.join(kube, "pki"), a.run)
    port = a.host_port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cfg = {"run": a.run, "kubeDir": kube, "hostPort": port, "fabricNetns": a.fabric_netns or None,
           "caFile": ca, "certFile": crt, "keyFile": key, "tokenFile": os.path.join(kube, "tokens.csv"),
           "rbacFiles": a.rbac or [], "crdFile": a.crds, "seedFile": a.seed, "stateFile": a.state,
           "dataDir": os.path.join(kube, "data"), "manifestDir": a.manifest_dir or None,
           "meshsim": a.meshsim or None, "cgroup": a.cgroup or None}
    write_atomic(os.path.join(kube, "config.json"), json.dumps(cfg, indent=2))
    write_tokens(cfg, secrets.token_hex(24), secrets.token_hex(24))
    print(os.path.join(kube, "admin.kubeconfig"))


def cmd_rotate(a):
    cfg = load_config(a.kube_dir)
    admin, agent = None, None
    with open(cfg["tokenFile"]) as f:
        for line in f:
            token, user = line.split(",")[:2]
            if user == "admin":
                admin = token
            elif user == AGENT_USER:
                agent = token
    write_tokens(cfg, admin, secrets.token_hex(24))
    print(os.path.join(cfg["kubeDir"], "serviceaccount", "token"))


def listen_in_netns(netns_path, addr, port):
    """A listening socket in another network namespace (setns in this thread and back)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    clone_newnet = 0x40000000
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(target, clone_newnet) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns_path}")
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(128)
        finally:
            if libc.setns(own, clone_newnet) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)
    return s


def cmd_serve(a):
    from meshsim_apiserver import controllers as ctl
    from meshsim_apiserver.auth import Rbac, TokenFile
    from meshsim_apiserver.server import Api, Settings, TlsServer
    from meshsim_apiserver.serviceaccounts import Authenticator, ServiceAccountTokens
    from meshsim_apiserver.store import Store

    cfg = load_config(a.kube_dir)
    kube = cfg["kubeDir"]
    log = sys.stderr
    if cfg.get("cgroup"):
        try:
            os.makedirs(cfg["cgroup"], exist_ok=True)
            with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as e:
            print(f"meshsim apiserver: cannot join cgroup {cfg['cgroup']}: {e}", file=log)
    settings = Settings()
    settings_path = os.path.join(kube, "settings.json")
    if os.path.exists(settings_path):
        with open(settings_path) as f:
            settings.update(json.load(f))
    fresh = not os.path.exists(os.path.join(cfg["dataDir"], "snapshot.json"))
    store = Store(cfg["dataDir"])
    addresses = [f"127.0.0.1:{cfg['hostPort']}"] + ([f"{FABRIC_IP}:{FABRIC_PORT}"] if cfg.get("fabricNetns") else [])
    authenticator = Authenticator(TokenFile(cfg["tokenFile"]),
                                  ServiceAccountTokens(store, os.path.join(kube, "pki", "sa.key")))
    api = Api(store, authenticator, Rbac(cfg.get("rbacFiles") or []), settings=settings, addresses=addresses)
    endpoints = ctl.EndpointControllers(api)
    if fresh:
        load_seed(api, cfg, log)
        nodes = []
        if cfg.get("stateFile") and os.path.exists(cfg["stateFile"]):
            with open(cfg["stateFile"]) as f:
                state = json.load(f)
            nodes = [{"name": n.get("name"), "nodeIP": n.get("nodeIP") or n.get("nodeIp"),
                      "podCIDR": n.get("podCIDR") or n.get("podCidr")} for n in (state.get("nodes") or [])]
        ctl.bootstrap(api, nodes, FABRIC_IP, FABRIC_PORT)
        endpoints.sync_all()
        store.checkpoint()
    followers = []
    if cfg.get("manifestDir"):
        mirror = ctl.ManifestMirror(store, cfg["manifestDir"])
        followers.append(mirror)
    if cfg.get("meshsim"):
        followers.append(ctl.KubeProxy(store, cfg["meshsim"], cfg["run"]))
    for f in followers:
        f.start()

    def flush(body):
        rv = store.rv
        ok = all(f.wait(rv, float(body.get("timeoutSeconds", 30))) for f in followers)
        return {"resourceVersion": str(rv), "flushed": ok}

    def status(_):
        return {"resourceVersion": str(store.rv), "compactedResourceVersion": str(store.compacted_rv),
                "historyLength": len(store.history), "watches": api.watch_count, "settings": settings.as_json(),
                "objects": {gr: len(objs) for gr, objs in store.objects.items() if objs}}

    def compact(_):
        return {"compactedResourceVersion": str(store.compact())}

    def set_settings(body):
        settings.update(body)
        write_atomic(settings_path, json.dumps(settings.as_json()))
        return settings.as_json()

    def synthetic(body):
        endpoints.suspended += 1
        try:
            out = ctl.synthetic_cluster(api, int(body.get("pods", 0)), int(body.get("services", 0)),
                                        int(body.get("policies", 0)), int(body.get("namespaces", 10)))
        finally:
            endpoints.suspended -= 1
        endpoints.sync_all(only=lambda svc: store.flag("/services", svc, "synthetic"))
        store.checkpoint()
        out["resourceVersion"] = str(store.rv)
        return out

    api.ctl_handlers.update({("GET", "/meshsim/status"): status, ("POST", "/meshsim/compact"): compact,
                             ("POST", "/meshsim/settings"): set_settings, ("POST", "/meshsim/flush"): flush,
                             ("POST", "/meshsim/synthetic"): synthetic})

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cfg["certFile"], cfg["keyFile"])
    context.set_alpn_protocols(["http/1.1"])  # no HTTP/2: Go clients fall back to HTTP/1.1
    socks = []
    host = socket.socket()
    host.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    host.bind(("127.0.0.1", cfg["hostPort"]))
    host.listen(128)
    socks.append(host)
    if cfg.get("fabricNetns"):
        socks.append(listen_in_netns(cfg["fabricNetns"], FABRIC_IP, FABRIC_PORT))
    servers = [TlsServer(s, api, context, log) for s in socks]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True) for s in servers]
    for t in threads:
        t.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    info = {"pid": os.getpid(), "url": f"https://127.0.0.1:{cfg['hostPort']}",
            "fabricUrl": f"https://{FABRIC_IP}:{FABRIC_PORT}" if cfg.get("fabricNetns") else None,
            "startedAt": time.time()}
    write_atomic(os.path.join(kube, "apiserver.json"), json.dumps(info), 0o644)
    print(f"meshsim apiserver: serving {' '.join(addresses)} (pid {os.getpid()}, resourceVersion {store.rv})",
          file=log, flush=True)
    while not stop.wait(1):
        pass
    api.shutting_down.set()
    for s in servers:
        s.shutdown()
        s.server_close()
    for f in followers:
        f.stop()
    store.close()
    try:
        os.unlink(os.path.join(kube, "apiserver.json"))
    except FileNotFoundError:
        pass
    print("meshsim apiserver: stopped", file=log, flush=True)


def load_seed(api, cfg, log):
    """A fresh store: the mesh CRDs, then the run's objects (`meshsim manifests`)."""
    import yaml
    docs = []
    for path in (cfg.get("crdFile"), cfg.get("seedFile")):
        if path and os.path.exists(path):
            with open(path) as f:
                docs += [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    for d in docs:
        api_version = d.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        r = next((r for r in api.all_resources() if r.group == group and r.kind == d.get("kind")
                  and version in r.versions), None)
        name = f"{d.get('kind')} {(d.get('metadata') or {}).get('namespace', '')}/{(d.get('metadata') or {}).get('name')}"
        if r is None:
            print(f"meshsim apiserver: seed: {api_version} {name}: no such kind is served; skipped", file=log, flush=True)
            continue
        ns = (d.get("metadata") or {}).get("namespace") if r.namespaced else None
        if r.namespaced and not ns:
            ns = "default"
        try:
            if api.store.get(r.gr, ns or "", d["metadata"]["name"]) is None:
                api.create(r, ns, d, version)
        except Exception as e:
            print(f"meshsim apiserver: seed: {name}: {getattr(e, 'message', e)}; skipped", file=log, flush=True)


def alive(pid):
    """True until the process has exited (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def running_pid(kube):
    try:
        with open(os.path.join(kube, "apiserver.json")) as f:
            pid = json.load(f)["pid"]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
            if any(a.endswith(b"main.py") for a in cmdline) and b"serve" in cmdline:
                return pid
    except (OSError, ValueError, KeyError):
        pass
    return None


def request(kube, method, path, body=None, timeout=60):
    cfg = load_config(kube)
    with open(cfg["tokenFile"]) as f:
        admin = next(line.split(",")[0] for line in f if line.split(",")[1] == "admin")
    ctx = ssl.create_default_context(cafile=cfg["caFile"])
    req = urllib.request.Request(f"https://127.0.0.1:{cfg['hostPort']}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
        return json.load(resp)


def cmd_start(a):
    kube = os.path.abspath(a.kube_dir)
    if running_pid(kube):
        print(f"meshsim apiserver: already running (pid {running_pid(kube)})")
        return 0
    logf = open(os.path.join(kube, "apiserver.log"), "a")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", kube], stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(os.path.join(kube, "apiserver.log")) as f:
                tail = f.read()[-2000:]
            print(f"meshsim apiserver: exited with {proc.returncode} while starting:\n{tail}", file=sys.stderr)
            return 1
        if running_pid(kube) == proc.pid:
            try:
                request(kube, "GET", "/meshsim/status", timeout=5)
                print(f"meshsim apiserver: running (pid {proc.pid})")
                return 0
            except OSError:
                pass
        time.sleep(0.1)
    print(f"meshsim apiserver: not ready after {a.timeout} s (pid {proc.pid}); see {kube}/apiserver.log", file=sys.stderr)
    return 1


def cmd_stop(a):
    kube = os.path.abspath(a.kube_dir)
    pid = running_pid(kube)
    if not pid:
        print("meshsim apiserver: not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not alive(pid):
            print(f"meshsim apiserver: stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    print(f"meshsim apiserver: killed (pid {pid}) after 15 s")
    return 0


def cmd_status(a):
    kube = os.path.abspath(a.kube_dir)
    cfg = load_config(kube)
    pid = running_pid(kube)
    out = {"running": bool(pid), "pid": pid, "url": f"https://127.0.0.1:{cfg['hostPort']}",
           "fabricUrl": f"https://{FABRIC_IP}:{FABRIC_PORT}" if cfg.get("fabricNetns") else None,
           "kubeconfig": os.path.join(kube, "admin.kubeconfig"),
           "agentKubeconfig": os.path.join(kube, "agent.kubeconfig"),
           "serviceAccountDir": os.path.join(kube, "serviceaccount"), "log": os.path.join(kube, "apiserver.log")}
    if pid and a.verbose:
        try:
            out.update(request(kube, "GET", "/meshsim/status", timeout=10))
        except OSError as e:
            out["error"] = str(e)
    print(json.dumps(out, indent=2))
    return 0


def cmd_token(a):
    """A service-account token from the running server (TokenRequest), bound to a pod
    when asked, as the kubelet's projected tokens are."""
    import urllib.error
    spec = {"expirationSeconds": a.expiration_seconds}
    if a.audience:
        spec["audiences"] = a.audience
    if a.pod:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": a.pod}
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = f"/api/v1/namespaces/{a.namespace}/serviceaccounts/{a.service_account}/token"
    try:
        token = request(os.path.abspath(a.kube_dir), "POST", path, body, timeout=30)["status"]["token"]
    except urllib.error.HTTPError as e:
        try:
            message = json.load(e).get("message") or str(e)
        except ValueError:
            message = str(e)
        print(f"meshsim apiserver: token for {a.namespace}/{a.service_account}: {message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"meshsim apiserver: token: is the API server running? {e}", file=sys.stderr)
        return 1
    if a.file:
        path = os.path.abspath(a.file)
        write_atomic(path, token, 0o600)
        os.chmod(path, 0o600)  # whatever mode a stale temp file had
        print(path)
    else:
        print(token)
    return 0


def cmd_ctl(a):
    body = json.loads(a.body) if a.body else ({} if a.method == "POST" else None)
    try:
        print(json.dumps(request(os.path.abspath(a.kube_dir), a.method, a.path, body, timeout=a.timeout), indent=2))
    except OSError as e:
        print(f"meshsim apiserver: {a.method} {a.path}: {e}", file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(prog="meshsim-apiserver")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("kube_dir")
    i.add_argument("--run", required=True)
    i.add_argument("--host-port", type=int, default=0)
    i.add_argument("--fabric-netns")
    i.add_argument("--rbac", action="append")
    i.add_argument("--crds")
    i.add_argument("--seed")
    i.add_argument("--state")
    i.add_argument("--manifest-dir")
    i.add_argument("--meshsim")
    i.add_argument("--cgroup")
    for name in ("serve", "stop", "rotate-agent-token"):
        sub.add_parser(name).add_argument("kube_dir")
    s = sub.add_parser("start")
    s.add_argument("kube_dir")
    s.add_argument("--timeout", type=float, default=30)
    st = sub.add_parser("status")
    st.add_argument("kube_dir")
    st.add_argument("-v", "--verbose", action="store_true")
    c = sub.add_parser("ctl")
    c.add_argument("kube_dir")
    c.add_argument("method")
    c.add_argument("path")
    c.add_argument("body", nargs="?")
    c.add_argument("--timeout", type=float, default=600)
    t = sub.add_parser("token")
    t.add_argument("kube_dir")
    t.add_argument("--namespace", required=True)
    t.add_argument("--service-account", required=True)
    t.add_argument("--pod", help="bind the token to this pod of the namespace (it must run as the service account)")
    t.add_argument("--audience", action="append", help="repeatable; default: the API server's own")
    t.add_argument("--expiration-seconds", type=int, default=86400)
    t.add_argument("--file", help="write the token here (0600) and print the path")
    a = p.parse_args()
    fn = {"init": cmd_init, "serve": cmd_serve, "start": cmd_start, "stop": cmd_stop, "status": cmd_status,
          "ctl": cmd_ctl, "rotate-agent-token": cmd_rotate, "token": cmd_token}[a.cmd]
    return fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
