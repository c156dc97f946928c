#!/usr/bin/env python3
"""Long-lived connections through agent upgrades (scenario 32), run inside
shop/client against an echo server: checksummed streams sending both ways
all the time, one idle connection, and many small ones. Runs until STOP_FILE
exists (bounded by --max-seconds), then ends every connection cleanly and
checks that every byte came back in order. Progress (bytes echoed so far) is
written to PROGRESS_FILE every 0.2 s; the summary (JSON) goes to stdout.
With --gaps-file, every pause of a stream's echo of GAP_MS or more (the
wall-clock time it began, its length in ms) is written there at the end,
to be set against the upgrades' times. Exit 0 only if nothing was reset,
lost or corrupted."""
import argparse
import hashlib
import json
import os
import resource
import socket
import sys
import threading
import time


PERIOD = (1 << 20) + 7  # no power of two: a shifted or repeated block does not line up
_patterns = {}


def pattern(seed, offset, size):
    """Bytes [offset, offset+size) of stream `seed`: a cycle of PERIOD bytes
    of sha256 counter blocks, made once per stream, so that checking costs
    a slice and a compare (the client's own CPU would otherwise show as
    pauses in the figures)."""
    base = _patterns.get(seed)
    if base is None:
        block = b"".join(hashlib.sha256(b"%d:%d" % (seed, i)).digest() for i in range(PERIOD // 32 + 1))[:PERIOD]
        base = _patterns[seed] = block + block[:1 << 17]  # a run past the end needs no wrap below 128 KiB
    out = bytearray()
    while size > 0:
        at = offset % PERIOD
        take = min(size, len(base) - at)
        out += base[at:at + take]
        offset += take
        size -= take
    return bytes(out)


class Stream:
    """Sends CHUNK bytes every INTERVAL seconds and checks the echo."""

    def __init__(self, address, seed, chunk, interval, gap_ms):
        self.sock = socket.create_connection(address, timeout=30)
        self.seed, self.chunk, self.interval = seed, chunk, interval
        self.sent = self.received = 0
        self.gap_ms = gap_ms
        self.gaps = []  # (wall-clock start, ms) of each pause >= gap_ms between two echoed reads
        self.error = None
        self.stop = threading.Event()
        self.writer = threading.Thread(target=self.write, daemon=True)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.writer.start()
        self.reader.start()

    def write(self):
        try:
            while not self.stop.is_set():
                self.sock.sendall(pattern(self.seed, self.sent, self.chunk))
                self.sent += self.chunk
                time.sleep(self.interval)
            # Half-close only once every byte has come back: a TLS peer on
            # Python's asyncio drops what it writes after the close_notify
            # this FIN becomes (CPython 3.11 asyncio/sslproto.py: _do_read
            # starts the shutdown on close_notify, and _write_appdata in the
            # FLUSHING state discards), which is the echo server's limit,
            # not the path under test.
            deadline = time.time() + 30
            while self.received < self.sent and not self.error and time.time() < deadline:
                time.sleep(0.01)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.error = self.error or f"send: {e}"

    def read(self):
        last = None
        try:
            while True:
                data = self.sock.recv(65536)
                now = time.time()
                if last is not None and (now - last) * 1000 >= self.gap_ms:
                    self.gaps.append((last, (now - last) * 1000))
                last = now
                if not data:
                    return
                if data != pattern(self.seed, self.received, len(data)):
                    self.error = self.error or f"corrupt bytes at offset {self.received}"
                    return
                self.received += len(data)
        except OSError as e:
            self.error = self.error or f"recv: {e}"

    def finish(self):
        self.stop.set()
        self.writer.join(30)
        self.reader.join(30)
        if not self.error and self.received != self.sent:
            self.error = f"{self.received} of {self.sent} bytes came back"
        self.sock.close()
        return self.error


def exchange(sock, line):
    """Sends a line and reads its echo; an error string or None."""
    try:
        sock.sendall(line)
        got = b""
        while len(got) < len(line):
            data = sock.recv(len(line) - len(got))
            if not data:
                return "closed"
            got += data
        return None if got == line else f"echoed {got!r} for {line!r}"
    except OSError as e:
        return str(e)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", required=True, help="ip:port of an echo server")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--progress-file", required=True)
    parser.add_argument("--max-seconds", type=float, default=180)
    parser.add_argument("--gaps-file", help="where to write each stream's pauses (JSON)")
    parser.add_argument("--gap-ms", type=float, default=10)
    args = parser.parse_args()
    # A socket per connection: as many as the hard limit allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = args.to.rsplit(":", 1)
    address = (host, int(port))

    streams = [Stream(address, 100 + i, 16384, 0.005, args.gap_ms) for i in range(args.streams)]
    # A bulk transfer: one stream at full speed.
    streams.append(Stream(address, 99, 65536, 0, args.gap_ms))
    idle = socket.create_connection(address, timeout=30)
    errors = []
    if (e := exchange(idle, b"idle-hello\n")):
        errors.append(f"idle: {e}")
    small = []
    for i in range(args.small):
        s = socket.create_connection(address, timeout=30)
        if (e := exchange(s, b"small-%d\n" % i)):
            errors.append(f"small {i}: {e}")
        small.append(s)

    started = time.time()
    with open(args.progress_file + ".ready", "w") as f:
        f.write("ready\n")
    while not os.path.exists(args.stop_file) and time.time() - started < args.max_seconds:
        with open(args.progress_file + ".tmp", "w") as f:
            f.write("%d\n" % sum(s.received for s in streams))
        os.replace(args.progress_file + ".tmp", args.progress_file)
        if any(s.error for s in streams):
            break
        time.sleep(0.2)

    if (e := exchange(idle, b"idle-bye\n")):
        errors.append(f"idle: {e}")
    idle.close()
    for i, s in enumerate(small):
        if (e := exchange(s, b"small-%d-again\n" % i)):
            errors.append(f"small {i}: {e}")
        s.close()
    for s in streams:
        if (e := s.finish()):
            errors.append(f"stream {s.seed}: {e}")
    summary = {
        "seconds": round(time.time() - started, 1),
        "stream_bytes": [s.received for s in streams],
        "small": len(small),
        "errors": errors[:20],
        "error_count": len(errors),
    }
    if args.gaps_file:
        with open(args.gaps_file, "w") as f:
            json.dump({str(s.seed): [[round(t, 4), round(ms, 2)] for t, ms in s.gaps] for s in streams}, f)
    print(json.dumps(summary))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
