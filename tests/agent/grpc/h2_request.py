#!/usr/bin/python3
"""One HTTP/2 request on python3-h2 over TLS, frame by frame, for the requests
a gRPC library would never send (server_test.cpp): other methods and content
types, compressed or repeated messages, bad grpc-timeout, a request that
never ends.

Usage: h2_request.py --port P --roots FILE --name NAME --path PATH
       [--method M] [--header k=v]... [--body-hex HEX] [--no-end-stream] [--wait S]
Prints {"headers": [[k, v]...], "trailers": [[k, v]...], "data_hex": ...,
"reset": code or null, "ended": bool, "goaway": code or null}.
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
conn.send_headers(stream, headers, end_stream=not body and not opts.no_end_stream)
if body:
    conn.send_data(stream, body, end_stream=not opts.no_end_stream)
sock.sendall(conn.data_to_send())

result = {"headers": [], "trailers": [], "data_hex": "", "reset": None, "ended": False, "goaway": None}
data = b""
deadline = time.monotonic() + opts.wait
done = False
while not done and time.monotonic() < deadline:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        chunk = sock.recv(65536)
    except socket.timeout:
        break
    if not chunk:
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
            done = True
    # A reset may follow the end of an early answer: read on briefly for it.
    if result["ended"] or result["reset"] is not None:
        deadline = min(deadline, time.monotonic() + 0.2)
    out = conn.data_to_send()
    if out:
        sock.sendall(out)
result["data_hex"] = data.hex()
json.dump(result, sys.stdout)
