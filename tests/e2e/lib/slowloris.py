#!/usr/bin/python3
"""A slowloris client for the admin endpoints' e2e scenario (23).

Holds CONNECTIONS connections to HOST:PORT for SECONDS: each sends the start of
a request head and then one header byte every INTERVAL seconds, never the
blank line; a connection the server answers or closes is opened again. Prints
one JSON line: how many connections were opened, what the server did with
them (refused at once with a 503, cut at its deadline with a 408, closed
without an answer) and the longest time the server let one trickle.
Stdlib only; run with /usr/bin/python3. After the slowloris attack of
https://en.wikipedia.org/wiki/Slowloris_(computer_security).
"""
import json
import selectors
import socket
import sys
import time

host, port, count, seconds, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
sel = selectors.DefaultSelector()
stats = {"opened": 0, "connect_failed": 0, "refused_503": 0, "cut_408": 0, "other_status": 0, "closed_silently": 0,
         "longest_held_s": 0.0, "open_at_end": 0, "reasons": {}}
conns = {}


def open_one():
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect_ex((host, port))
    except OSError:
        stats["connect_failed"] += 1
        return
    stats["opened"] += 1
    conns[s] = {"start": time.monotonic(), "next": time.monotonic(), "sent_head": False, "got": b""}
    sel.register(s, selectors.EVENT_READ)


def finish(s, state):
    held = time.monotonic() - state["start"]
    got = state["got"]
    if got.startswith(b"HTTP/1.1 503"):
        stats["refused_503"] += 1
        body = got.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
        key = body[:60]
        stats["reasons"][key] = stats["reasons"].get(key, 0) + 1
    elif got.startswith(b"HTTP/1.1 408"):
        stats["cut_408"] += 1
        stats["longest_held_s"] = max(stats["longest_held_s"], round(held, 3))
    elif got:
        stats["other_status"] += 1
    else:
        stats["closed_silently"] += 1
        stats["longest_held_s"] = max(stats["longest_held_s"], round(held, 3))
    sel.unregister(s)
    s.close()
    del conns[s]


end = time.monotonic() + seconds
for _ in range(count):
    open_one()
while time.monotonic() < end:
    for key, _ in sel.select(timeout=0.05):
        s = key.fileobj
        state = conns[s]
        try:
            data = s.recv(4096)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        if data:
            state["got"] += data
            continue
        finish(s, state)
        open_one()
    now = time.monotonic()
    for s, state in list(conns.items()):
        if now < state["next"]:
            continue
        state["next"] = now + interval
        try:
            s.send(b"x" if state["sent_head"] else b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            state["sent_head"] = True
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # reset: the read side reports it
stats["open_at_end"] = len(conns)
for s, state in conns.items():
    stats["longest_held_s"] = max(stats["longest_held_s"], round(time.monotonic() - state["start"], 3))
    s.close()
print(json.dumps(stats))
