#!/usr/bin/python3
"""`meshlock-agent ca` against independent implementations: Debian's
python3-grpcio as the gRPC client (nobody on this project wrote it), keys and
CSRs from python3-cryptography, and meshsim's Kubernetes API server for the
TokenReviews, the pods the node authorizer reads and the root ConfigMap.

Usage: ca_grpcio_test.py AGENT_BINARY PB2_DIR (ctest passes both).
Expected behaviour: istiod's CA (istio/istio security/pkg/server/ca/server.go,
node_auth.go at 86c9f01f): the answer is leaf first, root last; the SAN is the
caller's identity or the impersonated one; a node agent gets only identities
with a pod on its own node; a token that is not for istio-ca is refused."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

AGENT, PB2 = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "sim", "apiserver"))
sys.path.insert(0, PB2)

import grpc  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from identity.proto import ca_pb2  # noqa: E402
from test_apiserver import RunningServer, free_port  # noqa: E402

METHOD = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
SERVING_NAME = "meshlock-ca.meshlock-system.svc"


def make_plugin_ca(directory):
    """Istio's cacerts layout, made with python3-cryptography: root -> intermediate."""
    import datetime
    now = datetime.datetime.utcnow()

    def ca(name, issuer, issuer_key, path_length):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject)
                .issuer_name(issuer.subject if issuer else subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .sign(issuer_key or key, hashes.SHA256()))
        return cert, key

    root, root_key = ca("grpcio-test root", None, None, None)
    inter, inter_key = ca("grpcio-test intermediate", root, root_key, 0)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    files = {"root-cert.pem": pem(root), "ca-cert.pem": pem(inter), "cert-chain.pem": pem(inter) + pem(root),
             "ca-key.pem": inter_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption())}
    os.makedirs(directory)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
    return root, inter


def csr_for(identity):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


class CaGrpcioTest(RunningServer, unittest.TestCase):
    SEED_EXTRA = ("---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: shop}\n"
                  "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop}\n"
                  "spec: {nodeName: node-a, serviceAccountName: web, containers: [{name: app, image: x}]}\n"
                  "status: {phase: Running, podIP: 10.244.1.11}\n"
                  "---\napiVersion: v1\nkind: Pod\nmetadata: {name: db-1, namespace: shop}\n"
                  "spec: {nodeName: node-b, serviceAccountName: db, containers: [{name: app, image: x}]}\n"
                  "status: {phase: Running, podIP: 10.244.2.11}\n")

    @classmethod
    def ca_rbac(cls):
        with open(os.path.join(SOURCE, "deploy", "ca", "rbac.yaml")) as f:
            return f.read()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.start_ca()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_ca(cls):
        cls.root, cls.inter = make_plugin_ca(os.path.join(cls.dir, "cacerts"))
        token = subprocess.run([sys.executable, os.path.join(SOURCE, "tests", "sim", "apiserver", "main.py"), "token",
                                cls.kube, "--namespace", "meshlock-system", "--service-account", "meshlock-ca"],
                               check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
        kubeconfig = os.path.join(cls.dir, "ca.kubeconfig")
        with open(kubeconfig, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "ca",
                       "clusters": [{"name": "c", "cluster": {"server": cls.base, "certificate-authority": cls.cfg["caFile"]}}],
                       "users": [{"name": "ca", "user": {"token": token}}],
                       "contexts": [{"name": "ca", "context": {"cluster": "c", "user": "ca", "namespace": "meshlock-system"}}]}, f)
        cls.port, cls.admin_port = free_port(), free_port()
        cls.log = open(os.path.join(cls.dir, "ca.log"), "w")
        cls.proc = subprocess.Popen([AGENT, "ca", "--kubeconfig", kubeconfig, "--ca-dir", os.path.join(cls.dir, "cacerts"),
                                     "--listen", f"127.0.0.1:{cls.port}", "--admin-address", f"127.0.0.1:{cls.admin_port}",
                                     "--serving-name", SERVING_NAME], stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if cls.proc.poll() is not None:
                raise AssertionError("meshlock-agent ca exited: " + open(cls.log.name).read())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{cls.admin_port}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the CA was not ready in 20 s: " + open(cls.log.name).read())
        root_pem = cls.root.public_bytes(serialization.Encoding.PEM)
        cls.channel = grpc.secure_channel(f"127.0.0.1:{cls.port}", grpc.ssl_channel_credentials(root_certificates=root_pem),
                                          options=[("grpc.ssl_target_name_override", SERVING_NAME)])
        cls.create = cls.channel.unary_unary(METHOD, request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                                             response_deserializer=ca_pb2.IstioCertificateResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "channel", None):
            cls.channel.close()
        if getattr(cls, "proc", None):
            cls.proc.send_signal(signal.SIGTERM)
            try:
                cls.proc.wait(10)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
            cls.log.close()
        super().tearDownClass()

    def agent_token(self, node):
        return self.token("meshlock-system", "meshlock-agent", pod=f"meshlock-agent-{node}", audiences=["istio-ca"])

    def ask(self, token, identity=None, ttl=3600, own_identity="spiffe://cluster.local/ns/shop/sa/web"):
        key, csr = csr_for(identity or own_identity)
        request = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=ttl)
        if identity:
            request.metadata.fields["ImpersonatedIdentity"].string_value = identity
        return key, self.create(request, metadata=[("authorization", f"Bearer {token}"), ("clusterid", "Kubernetes")],
                                timeout=10)

    def check_chain(self, response, key, identity):
        chain = [x509.load_pem_x509_certificate(c.encode()) for c in response.cert_chain]
        self.assertEqual(len(chain), 3, "leaf, intermediate, root")
        leaf = chain[0]
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(sans.get_values_for_type(x509.UniformResourceIdentifier), [identity])
        self.assertEqual(leaf.public_key().public_numbers(), key.public_key().public_numbers())
        for cert, issuer in ((leaf, chain[1]), (chain[1], chain[2])):  # (Debian's cryptography 38 has no verify_directly_issued_by)
            self.assertEqual(cert.issuer, issuer.subject)
            issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        self.assertEqual(chain[2], self.root, "the root is last")

    def refused(self, token, identity, code):
        with self.assertRaises(grpc.RpcError) as raised:
            self.ask(token, identity)
        self.assertEqual(raised.exception.code(), code, raised.exception.details())
        return raised.exception.details()

    def test_node_agent_gets_its_nodes_identity(self):
        key, response = self.ask(self.agent_token("node-a"), "spiffe://cluster.local/ns/shop/sa/web")
        self.check_chain(response, key, "spiffe://cluster.local/ns/shop/sa/web")

    def test_node_agent_refused_another_nodes_identity(self):
        details = self.refused(self.agent_token("node-a"), "spiffe://cluster.local/ns/shop/sa/db",
                               grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn('no instances of "shop/db" found on node "node-a"', details)
        # ...which node-b's agent gets.
        key, response = self.ask(self.agent_token("node-b"), "spiffe://cluster.local/ns/shop/sa/db")
        self.check_chain(response, key, "spiffe://cluster.local/ns/shop/sa/db")

    def test_workload_gets_only_its_own_identity(self):
        token = self.token("shop", "web", pod="web-1", audiences=["istio-ca"])
        key, response = self.ask(token)
        self.check_chain(response, key, "spiffe://cluster.local/ns/shop/sa/web")
        self.refused(token, "spiffe://cluster.local/ns/shop/sa/db", grpc.StatusCode.PERMISSION_DENIED)

    def test_tokens_that_are_not_for_this_ca(self):
        self.refused("forged", "spiffe://cluster.local/ns/shop/sa/web", grpc.StatusCode.UNAUTHENTICATED)
        api_audience = self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-a")
        details = self.refused(api_audience, "spiffe://cluster.local/ns/shop/sa/web", grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("audience", details)
        with self.assertRaises(grpc.RpcError) as raised:
            self.create(ca_pb2.IstioCertificateRequest(csr="x"), timeout=10)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_bad_requests(self):
        token = self.agent_token("node-a")
        with self.assertRaises(grpc.RpcError) as raised:
            self.ask(token, "spiffe://cluster.local/ns/shop/sa/web", ttl=91 * 24 * 3600)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("greater than the max allowed TTL", raised.exception.details())
        request = ca_pb2.IstioCertificateRequest(csr="-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n")
        request.metadata.fields["ImpersonatedIdentity"].string_value = "spiffe://cluster.local/ns/shop/sa/web"
        with self.assertRaises(grpc.RpcError) as raised:
            self.create(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_a_moved_pod_gets_its_certificate_on_the_new_node(self):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "queue-1", "namespace": "shop"},
               "spec": {"nodeName": "node-b", "serviceAccountName": "queue", "containers": [{"name": "app", "image": "x"}]}}
        self.assertEqual(self.call("POST", "/api/v1/namespaces/shop/pods", pod)[0], 201)
        identity = "spiffe://cluster.local/ns/shop/sa/queue"
        self.wait_for(lambda: self.ask(self.agent_token("node-b"), identity))
        self.assertEqual(self.call("DELETE", "/api/v1/namespaces/shop/pods/queue-1")[0], 200)
        pod["metadata"]["name"], pod["spec"]["nodeName"] = "queue-2", "node-a"
        self.assertEqual(self.call("POST", "/api/v1/namespaces/shop/pods", pod)[0], 201)
        key, response = self.wait_for(lambda: self.ask(self.agent_token("node-a"), identity))
        self.check_chain(response, key, identity)
        self.wait_for(lambda: self.refused(self.agent_token("node-b"), identity, grpc.StatusCode.PERMISSION_DENIED))

    def test_root_configmap_and_metrics(self):
        code, cm = self.call("GET", "/api/v1/namespaces/meshlock-system/configmaps/meshlock-ca-root-cert")
        self.assertEqual(code, 200, cm)
        self.assertEqual(x509.load_pem_x509_certificate(cm["data"]["root-cert.pem"].encode()), self.root)
        self.ask(self.agent_token("node-a"), "spiffe://cluster.local/ns/shop/sa/web")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        self.assertRegex(text, r'meshlock_ca_requests_total\{outcome="issued"\} [1-9]')

    def wait_for(self, attempt, seconds=10):
        """The CA learns of pods through its watch: retry until it has."""
        deadline = time.time() + seconds
        while True:
            try:
                return attempt()
            except (grpc.RpcError, AssertionError):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)


if __name__ == "__main__":
    unittest.main()
