#!/usr/bin/env python3
"""An HBONE client built on independent stacks: Debian's python3-h2 for
HTTP/2 and Python's ssl (OpenSSL) for TLS 1.3, speaking as ztunnel's
outbound does (src/proxy/h2/client.rs, istio/ztunnel): ALPN h2, one CONNECT
stream per target with :authority = "ip:port", and the baggage, forwarded
and traceparent headers.

Each --stream opens one stream on the same connection, sends --bytes of a
deterministic pattern, then END_STREAM (unless --keep-open), and reads until
the server ends or resets the stream. Prints one JSON object:
  {"alpn", "tls_version", "server_id", "streams": [{"authority", "status",
   "sent", "received", "echo_ok", "ended", "reset"}], "error"}
Every wait is bounded by --timeout.
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


def pattern(seed, n):
    out = bytearray(n)
    x = (seed * 2654435761 + 1) & 0xFFFFFFFF
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


def tls_socket(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # mesh certificates name SPIFFE IDs, not hosts
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.minimum_version = getattr(ssl.TLSVersion, args.min_tls)
    if args.max_tls:
        ctx.maximum_version = getattr(ssl.TLSVersion, args.max_tls)
    if args.alpn != "none":
        ctx.set_alpn_protocols(args.alpn.split(","))
    host, port = args.connect.rsplit(":", 1)
    raw = socket.create_connection((host.strip("[]"), int(port)), timeout=args.timeout)
    return ctx.wrap_socket(raw)


def server_spiffe_id(sock):
    cert = sock.getpeercert() or {}
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith("spiffe://"):
            return value
    return None


def run(args):
    result = {"alpn": None, "tls_version": None, "server_id": None, "streams": [], "error": None}
    try:
        sock = tls_socket(args)
    except (OSError, ssl.SSLError) as e:
        result["error"] = "tls: %s" % e
        return result
    result["alpn"] = sock.selected_alpn_protocol()
    result["tls_version"] = sock.version()
    result["server_id"] = server_spiffe_id(sock)
    deadline = time.monotonic() + args.timeout
    # python3-h2 4.1 insists on :path and :scheme in every request, which RFC
    # 9113 8.5 forbids in CONNECT: its own check of what we send is off.
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    # As ztunnel's client: large windows, so a stream is not held to 64 KiB in flight.
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 * 1024 * 1024})
    conn.increment_flow_control_window(12 * 1024 * 1024)
    streams = {}
    for index, authority in enumerate(args.stream):
        sid = conn.get_next_available_stream_id()
        headers = [(":method", args.method), (":authority", authority)]
        if args.method != "CONNECT":
            headers += [(":scheme", "https"), (":path", "/")]
        headers += [("baggage", "k8s.namespace.name=%s" % args.namespace),
                    ("forwarded", "for=%s" % args.forwarded_for),
                    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
        conn.send_headers(sid, headers, end_stream=False)
        payload = pattern(index + 1, args.bytes)
        streams[sid] = {"authority": authority, "status": None, "payload": payload, "offset": 0,
                        "sent_end": False, "received": bytearray(), "ended": False, "reset": None}
    try:
        sock.sendall(conn.data_to_send())
        sock.setblocking(False)
        while time.monotonic() < deadline:
            # Send what the windows allow, then END_STREAM once everything went.
            for sid, s in streams.items():
                if s["sent_end"] or s["reset"] is not None or s["ended"]:
                    continue
                if s["status"] is not None and s["status"] != 200:
                    continue
                while s["offset"] < len(s["payload"]):
                    window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if window <= 0:
                        break
                    chunk = s["payload"][s["offset"]:s["offset"] + window]
                    conn.send_data(sid, chunk)
                    s["offset"] += len(chunk)
                if s["offset"] == len(s["payload"]) and not args.keep_open:
                    conn.end_stream(sid)
                    s["sent_end"] = True
            out = conn.data_to_send()
            while out:
                try:
                    n = sock.send(out)
                    out = out[n:]
                except (ssl.SSLWantWriteError, BlockingIOError):
                    select.select([], [sock], [], 0.05)
            if all(s["ended"] or s["reset"] is not None for s in streams.values()):
                break
            if args.keep_open and all(s["status"] is not None and len(s["received"]) >= len(s["payload"])
                                      for s in streams.values()):
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if not readable and sock.pending() == 0:
                continue
            try:
                data = sock.recv(1 << 20)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            if not data:
                result["error"] = "the server closed the connection"
                break
            for event in conn.receive_data(data):
                s = streams.get(getattr(event, "stream_id", None))
                if isinstance(event, h2.events.ResponseReceived):
                    s["status"] = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    s["received"] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    s["ended"] = True
                elif isinstance(event, h2.events.StreamReset):
                    if s is not None:
                        s["reset"] = event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    result["error"] = "GOAWAY %s" % event.error_code
        else:
            result["error"] = "timed out"
    except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
    for sid, s in streams.items():
        result["streams"].append({
            "authority": s["authority"], "status": s["status"], "sent": s["offset"],
            "received": len(s["received"]), "echo_ok": bytes(s["received"]) == s["payload"],
            "ended": s["ended"], "reset": None if s["reset"] is None else int(s["reset"]),
        })
    try:
        conn.close_connection()
        sock.setblocking(True)
        sock.sendall(conn.data_to_send())
        sock.close()
    except (OSError, ssl.SSLError):
        pass
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connect", required=True, help="host:port of the HBONE server (15008)")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--stream", action="append", required=True, help="a target ip:port, once per stream")
    p.add_argument("--bytes", type=int, default=1024)
    p.add_argument("--method", default="CONNECT")
    p.add_argument("--alpn", default="h2", help="comma-separated, or 'none'")
    p.add_argument("--min-tls", default="TLSv1_3")
    p.add_argument("--max-tls", default=None)
    p.add_argument("--keep-open", action="store_true", help="do not send END_STREAM")
    p.add_argument("--namespace", default="shop")
    p.add_argument("--forwarded-for", default="10.0.0.9")
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    sys.exit(main())
