#!/usr/bin/env python3
"""`meshlock-agent proxy` end to end: an originate -> terminate pair of real
processes between a client and an echo app, checked against independent TLS
peers (the openssl CLI), with both event-loop back ends.

Env: MESHLOCK_BIN_DIR (meshlock-agent), MESHLOCK_SOURCE_DIR.
"""
import hashlib
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = os.environ.get("MESHLOCK_BIN_DIR", "build/bin")
SRC = os.environ.get("MESHLOCK_SOURCE_DIR", ".")
AGENT = os.path.join(BIN, "meshlock-agent")
SANITIZED = "libasan" in subprocess.run(["ldd", AGENT], capture_output=True, text=True).stdout
CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/shop/sa/server"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


class EchoApp:
    """Echoes each connection until EOF, then half-closes. One thread with a
    selector, so ten thousand idle connections cost no threads."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            for key, _ in self.sel.select(timeout=0.2):
                if key.data is None:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    self.accepted += 1
                    c.setblocking(True)
                    c.settimeout(10)
                    self.sel.register(c, selectors.EVENT_READ, "conn")
                    continue
                c = key.fileobj
                try:
                    data = c.recv(1 << 20)
                    if data:
                        c.sendall(data)
                        continue
                    c.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                self.sel.unregister(c)
                c.close()

    def close(self):
        self.running = False
        self.thread.join()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class ProxyPair:
    def __init__(self, pki, app_port, io, extra_terminate=(), inbound_mode="strict"):
        self.app_port = app_port
        self.terminate_port = free_port()
        self.originate_port = free_port()
        common = ["--ca", f"{pki}/ca.pem", "--threads", "1", "--io", io]
        self.terminate = subprocess.Popen(
            [AGENT, "proxy", "--mode", "terminate", "--listen", f"127.0.0.1:{self.terminate_port}",
             "--connect", f"127.0.0.1:{app_port}", "--cert", f"{pki}/server.pem", "--key", f"{pki}/server.key",
             "--expect-identity", CLIENT_ID, "--inbound-mode", inbound_mode, *common, *extra_terminate],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.originate = subprocess.Popen(
            [AGENT, "proxy", "--mode", "originate", "--listen", f"127.0.0.1:{self.originate_port}",
             "--connect", f"127.0.0.1:{self.terminate_port}", "--cert", f"{pki}/client.pem",
             "--key", f"{pki}/client.key", "--expect-identity", SERVER_ID, *common],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in (self.terminate, self.originate):
            line = p.stdout.readline()
            if "meshlock-agent proxy:" not in line:
                raise RuntimeError(f"proxy did not start: {line} {p.stderr.read() if p.poll() is not None else ''}")
            assert f", {'io_uring' if io == 'uring' else 'epoll'}" in line, line

    def stop(self):
        out = {}
        for name, p in (("originate", self.originate), ("terminate", self.terminate)):
            p.terminate()
            try:
                _, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            out[name] = err
        return out


class ClientResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def openssl_client(port, pki, *args, data=b"ping\n", cert="client", wait=3.0):
    """s_client as an independent peer: sends `data`, waits up to `wait` s for
    the same number of bytes back, then closes its input (s_client would
    otherwise quit at EOF before the answer arrives)."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", f"{pki}/ca.pem", "-quiet", *args]
    if cert:
        cmd += ["-cert", f"{pki}/{cert}.pem", "-key", f"{pki}/{cert}.key"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.set_blocking(p.stdout.fileno(), False)
    out = b""
    try:
        p.stdin.write(data)
        p.stdin.flush()
    except BrokenPipeError:
        pass
    end = time.time() + wait
    while len(out) < len(data) and time.time() < end and p.poll() is None:
        try:
            chunk = p.stdout.read()
            if chunk:
                out += chunk
        except (BlockingIOError, TypeError):
            pass
        time.sleep(0.02)
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    os.set_blocking(p.stdout.fileno(), True)
    out += p.stdout.read()
    err = p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    return ClientResult(p.returncode, out, err)


class ProxyE2E:
    io = "uring"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="meshlock-proxy-e2e-")
        cls.pki = cls.tmp.name
        subprocess.run(["bash", f"{SRC}/tests/agent/engine/make_test_pki.sh", cls.pki], check=True)
        cls.app = EchoApp()
        cls.pair = ProxyPair(cls.pki, cls.app.port, cls.io)

    @classmethod
    def tearDownClass(cls):
        errs = cls.pair.stop()
        for name, err in errs.items():
            sys.stderr.write(f"--- {name} ({cls.io}) ---\n{err[-3000:]}\n")
        cls.app.close()
        cls.tmp.cleanup()

    def test_checksummed_transfer_through_the_pair(self):
        payload = os.urandom(32 << 20)
        with socket.create_connection(("127.0.0.1", self.pair.originate_port)) as s:
            received = bytearray()

            def reader():
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        return
                    received.extend(chunk)

            t = threading.Thread(target=reader)
            t.start()
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            t.join(60)
        self.assertEqual(hashlib.sha256(received).hexdigest(), hashlib.sha256(payload).hexdigest())

    def test_openssl_tls13_client_with_mesh_certificate_is_served(self):
        r = openssl_client(self.pair.terminate_port, self.pki, "-tls1_3")
        self.assertEqual(r.stdout, b"ping\n", r.stderr.decode(errors="replace"))

    def test_tls11_client_is_refused(self):
        before = self.app.accepted
        r = openssl_client(self.pair.terminate_port, self.pki, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn(b"ping", r.stdout)
        self.assertIn(b"alert protocol version", r.stderr, r.stderr)
        self.assertEqual(self.app.accepted, before)

    def test_client_certificate_from_foreign_ca_is_refused(self):
        before = self.app.accepted
        r = openssl_client(self.pair.terminate_port, self.pki, "-tls1_3", cert="foreign")
        self.assertNotIn(b"ping", r.stdout)
        self.assertEqual(self.app.accepted, before)

    def test_client_without_certificate_is_refused(self):
        before = self.app.accepted
        r = openssl_client(self.pair.terminate_port, self.pki, "-tls1_3", cert=None)
        self.assertNotIn(b"ping", r.stdout)
        self.assertEqual(self.app.accepted, before)

    def test_renegotiation_attempt_ends_the_connection(self):
        cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{self.pair.terminate_port}", "-CAfile",
               f"{self.pki}/ca.pem", "-cert", f"{self.pki}/client.pem", "-key", f"{self.pki}/client.key",
               "-tls1_2"]
        # "R" on a line of its own asks s_client to renegotiate.
        r = subprocess.run(cmd, input=b"R\n", capture_output=True, timeout=20)
        self.assertIn(b"RENEGOTIATING", r.stdout + r.stderr)
        # The proxy still serves afterwards.
        self.assertEqual(openssl_client(self.pair.terminate_port, self.pki, "-tls1_3").stdout, b"ping\n")

    def test_plaintext_to_strict_terminate_is_refused(self):
        before = self.app.accepted
        with socket.create_connection(("127.0.0.1", self.pair.terminate_port)) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
        self.assertEqual(data, b"")
        self.assertEqual(self.app.accepted, before)

    def test_ten_thousand_idle_connections(self):
        """Memory per idle connection, measured as RSS growth of each proxy."""
        n = int(os.environ.get("MESHLOCK_IDLE_CONNECTIONS", "10000"))
        # Each proxy holds two descriptors per connection, and so does this
        # process (client + app side). Where the hard limit cannot be raised
        # (no CAP_SYS_RESOURCE, as in some containers), use as many as fit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 2 * n + 500),) * 2)
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            n = min(n, (hard - 400) // 2)
        base = {name: rss_kib(p.pid) for name, p in (("originate", self.pair.originate), ("terminate", self.pair.terminate))}
        accepted_before = self.app.accepted
        socks = []
        try:
            # Opened in batches that the pair can handshake within its 10 s
            # deadline: this BoringSSL build does ~600 mutual handshakes/s/core.
            end = time.time() + 240
            for start in range(0, n, 250):
                for _ in range(min(250, n - start)):
                    socks.append(socket.create_connection(("127.0.0.1", self.pair.originate_port)))
                while self.app.accepted - accepted_before < len(socks) and time.time() < end:
                    time.sleep(0.05)
            self.assertEqual(self.app.accepted - accepted_before, n, "not every connection reached the app")
            time.sleep(0.5)
            grown = {name: rss_kib(p.pid) - base[name]
                     for name, p in (("originate", self.pair.originate), ("terminate", self.pair.terminate))}
            per_conn = {name: kib * 1024 / n for name, kib in grown.items()}
            sys.stderr.write(f"idle connections ({self.io}): {n}, RSS growth KiB {grown}, "
                             f"bytes per connection {per_conn}\n")
            # A connection here is an accepted socket, an upstream socket and a
            # TLS session. Issue 5's target is 10 KiB; this guards against
            # regressions from what is measured today (see docs/engine.md).
            if not SANITIZED:  # ASan's redzones and quarantine make RSS meaningless
                for name, b in per_conn.items():
                    self.assertLess(b, 24 * 1024, f"{name}: {b:.0f} bytes per idle connection")
            # They still work.
            socks[0].sendall(b"still alive")
            self.assertEqual(socks[0].recv(100), b"still alive")
        finally:
            for s in socks:
                s.close()


class ProxyE2EUring(ProxyE2E, unittest.TestCase):
    io = "uring"


class ProxyE2EEpoll(ProxyE2E, unittest.TestCase):
    io = "epoll"


if __name__ == "__main__":
    unittest.main(verbosity=2)
