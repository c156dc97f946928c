#!/usr/bin/python3
"""One HTTP/2 request on python3-h2 over TLS, frame by frame, for the requests
a gRPC library would never send (server_test.cpp): other methods and content
types, compressed or repeated messages, bad grpc-timeout, a request that
never ends.

Usage: h2_request.py --port P --roots FILE --name NAME --path PATH
       [--method M] [--header k=v]... [--body-hex HEX] [--no-end-stream] [--wait S]
       [--trickle-every S] [--ping-every S] [--no-request]
Prints {"headers": [[k, v]...], "trailers": [[k, v]...], "data_hex": ...,
"reset": code or null, "ended": bool, "goaway": code or null,
"closed_after": seconds until the server sent GOAWAY or closed, or null}.
"""
import argparse
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events

args = argparse.ArgumentParser()
args.add_argument("--port", type=int, required=True)
args.add_argument("--roots", required=True)
args.add_argument("--name", required=True)
args.add_argument("--path", default="/")
args.add_argument("--method", default="POST")
args.add_argument("--header", action="append", default=[])
args.add_argument("--body-hex", default="")
args.add_argument("--no-end-stream", action="store_true", help="send the headers and body, never END_STREAM")
args.add_argument("--wait", type=float, default=10, help="seconds to wait for the answer")
args.add_argument("--trickle-every", type=float, default=0, help="send the body one byte per this many seconds")
args.add_argument("--ping-every", type=float, default=0, help="send a PING this often while waiting")
args.add_argument("--no-request", action="store_true", help="open the connection, send no request")
opts = args.parse_args()

context = ssl.create_default_context(cafile=opts.roots)
context.set_alpn_protocols(["h2"])
sock = context.wrap_socket(socket.create_connection(("127.0.0.1", opts.port), timeout=opts.wait),
                           server_hostname=opts.name)
conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()
headers = [(":method", opts.method), (":scheme", "https"), (":path", opts.path),
           (":authority", f"{opts.name}:{opts.port}")]
headers += [tuple(h.split("=", 1)) for h in opts.header]
body = bytes.fromhex(opts.body_hex)
stream = conn.get_next_available_stream_id()
if not opts.no_request:
    conn.send_headers(stream, headers, end_stream=not body and not opts.no_end_stream)
    if body and not opts.trickle_every:
        conn.send_data(stream, body, end_stream=not opts.no_end_stream)
        body = b""
sock.sendall(conn.data_to_send())

result = {"headers": [], "trailers": [], "data_hex": "", "reset": None, "ended": False, "goaway": None,
          "closed_after": None}
data = b""
start = time.monotonic()
deadline = start + opts.wait
done = False
every = min([t for t in (opts.trickle_every, opts.ping_every) if t] or [opts.wait])
next_send = start + every
while not done and time.monotonic() < deadline:
    now = time.monotonic()
    if now >= next_send:
        next_send = now + every
        if opts.trickle_every and body and result["reset"] is None and not result["ended"]:
            conn.send_data(stream, body[:1], end_stream=len(body) == 1 and not opts.no_end_stream)
            body = body[1:]
        if opts.ping_every:
            conn.ping(b"12345678")
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            result["closed_after"] = time.monotonic() - start
            break
    sock.settimeout(max(0.01, min(deadline, next_send) - time.monotonic()))
    try:
        chunk = sock.recv(65536)
    except socket.timeout:
        continue
    except OSError:
        chunk = b""
    if not chunk:
        result["closed_after"] = time.monotonic() - start
        break
    for event in conn.receive_data(chunk):
        if isinstance(event, h2.events.ResponseReceived):
            result["headers"] = [list(h) for h in event.headers]
        elif isinstance(event, h2.events.TrailersReceived):
            result["trailers"] = [list(h) for h in event.headers]
        elif isinstance(event, h2.events.DataReceived):
            data += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            result["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            result["reset"] = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            result["goaway"] = int(event.error_code)
            result["closed_after"] = time.monotonic() - start
            done = True
    # A reset may follow the end of an early answer: read on briefly for it.
    if result["ended"] or result["reset"] is not None:
        deadline = min(deadline, time.monotonic() + 0.2)
    out = conn.data_to_send()
    if out:
        try:
            sock.sendall(out)
        except OSError:
            break
result["data_hex"] = data.hex()
json.dump(result, sys.stdout)
