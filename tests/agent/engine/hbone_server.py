#!/usr/bin/env python3
"""An HBONE server built on independent stacks (python3-h2, Python's ssl),
answering as ztunnel's inbound does (istio/ztunnel src/proxy/inbound.rs):
TLS 1.3 with a client certificate required, ALPN h2, each CONNECT stream
relayed to its :authority (200), 400 for anything that is not CONNECT, 503
when the target refuses. Targets listed with --deny get 401.

Prints "listening PORT" once ready, then one JSON line per stream when it
ends: {"authority", "status", "peer_id", "baggage", "forwarded",
"traceparent", "connection"} ("connection" counts the TLS connections, so a
test can see streams share one). Runs until --lifetime seconds pass, or --exit-after streams ended.
"""
import argparse
import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def peer_spiffe_id(sock):
    cert = sock.getpeercert() or {}
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith("spiffe://"):
            return value
    return None


class Tunnel:
    def __init__(self, sock, number, deny):
        self.sock = sock
        self.number = number
        self.deny = deny
        self.peer = peer_spiffe_id(sock)
        self.h2 = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=False))
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 * 1024 * 1024})
        self.streams = {}  # stream id -> {"app": socket, "out": bytearray, "ended": bool}
        self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.setblocking(True)
            self.sock.sendall(data)
            self.sock.setblocking(False)

    def report(self, sid, info, status):
        global reported
        reported += 1
        print(json.dumps({"authority": info.get(":authority"), "status": status, "peer_id": self.peer,
                          "baggage": info.get("baggage"), "forwarded": info.get("forwarded"),
                          "traceparent": info.get("traceparent"), "connection": self.number}), flush=True)

    def on_request(self, event):
        info = dict(event.headers)
        sid = event.stream_id
        if info.get(":method") != "CONNECT":
            self.h2.send_headers(sid, [(":status", "400")], end_stream=True)
            self.report(sid, info, 400)
            return
        authority = info.get(":authority", "")
        if authority in self.deny:
            self.h2.send_headers(sid, [(":status", "401")], end_stream=True)
            self.report(sid, info, 401)
            return
        host, port = authority.rsplit(":", 1)
        try:
            app = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        except OSError:
            self.h2.send_headers(sid, [(":status", "503")], end_stream=True)
            self.report(sid, info, 503)
            return
        app.setblocking(False)
        self.h2.send_headers(sid, [(":status", "200")])
        self.streams[sid] = {"app": app, "info": info, "app_eof": False}

    def step(self, readable):
        if self.sock in readable or self.sock.pending():
            try:
                data = self.sock.recv(1 << 20)
            except (ssl.SSLWantReadError, BlockingIOError):
                data = None
            if data == b"":
                return False
            if data:
                for event in self.h2.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.on_request(event)
                    elif isinstance(event, h2.events.DataReceived):
                        s = self.streams.get(event.stream_id)
                        if s:
                            s["app"].setblocking(True)
                            s["app"].sendall(event.data)
                            s["app"].setblocking(False)
                        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        s = self.streams.get(event.stream_id)
                        if s:
                            s["app"].shutdown(socket.SHUT_WR)
                    elif isinstance(event, h2.events.StreamReset):
                        s = self.streams.pop(event.stream_id, None)
                        if s:
                            s["app"].close()
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return False
        for sid, s in list(self.streams.items()):
            if s["app"] in readable and not s["app_eof"]:
                window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if window <= 0:
                    continue
                try:
                    data = s["app"].recv(window)
                except BlockingIOError:
                    continue
                if data:
                    self.h2.send_data(sid, data)
                else:
                    s["app_eof"] = True
                    self.h2.end_stream(sid)
                    s["app"].close()
                    self.report(sid, s["info"], 200)
                    del self.streams[sid]
        self.flush()
        return True

    def waitables(self):
        return [self.sock] + [s["app"] for s in self.streams.values() if not s["app_eof"]]


reported = 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--deny", action="append", default=[], help="an authority answered 401")
    p.add_argument("--lifetime", type=float, default=30.0)
    p.add_argument("--exit-after", type=int, default=0, help="end once this many streams were reported")
    args = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2"])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("listening %d" % listener.getsockname()[1], flush=True)
    deadline = time.monotonic() + args.lifetime
    tunnels = []
    count = 0
    while time.monotonic() < deadline and not (args.exit_after and reported >= args.exit_after):
        waitables = [listener] + [w for t in tunnels for w in t.waitables()]
        readable, _, _ = select.select(waitables, [], [], 0.1)
        readable += [t.sock for t in tunnels if t.sock.pending()]
        if listener in readable:
            raw, _ = listener.accept()
            try:
                sock = ctx.wrap_socket(raw, server_side=True)
                if sock.selected_alpn_protocol() != "h2":
                    sock.close()
                else:
                    count += 1
                    sock.setblocking(False)
                    tunnels.append(Tunnel(sock, count, set(args.deny)))
            except (OSError, ssl.SSLError) as e:
                print(json.dumps({"tls_error": str(e)}), flush=True)
        for t in list(tunnels):
            try:
                alive = t.step(readable)
            except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
                alive = False
            if not alive:
                tunnels.remove(t)
                t.sock.close()


if __name__ == "__main__":
    sys.exit(main())
