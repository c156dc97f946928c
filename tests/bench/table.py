#!/usr/bin/env python3
"""Markdown tables for the benchmarks, with ratios and the issues' targets.

    table.py engine RESULTS                 (tests/bench/engine/run.sh)
    table.py fullpath RESULTS [ENGINE]      (tests/bench/fullpath/run.sh; ENGINE: the
                                             engine section's results, for HAProxy's figures)

RESULTS files hold lines "setup metric value". Targets are issue 5's (item 7);
issue 7 holds the full path to the same ones, against the same HAProxy pair.
"""
import sys

# metric, label, kind of target (None, "tput", "cpu_gb", "latency", "conn", "idle")
ROWS = [
    ("gbit_1", "throughput, 1 stream (Gbit/s)", "tput"),
    ("gbit_8", "throughput, 8 streams (Gbit/s)", "tput"),
    ("cpu_gb_1", "proxy CPU-s per GB, 1 stream", "cpu_gb"),
    ("cpu_gb_8", "proxy CPU-s per GB, 8 streams", "cpu_gb"),
    ("pp_64_p50", "64 B at saturation p50 (µs)", "latency"),
    ("pp_64_p99", "64 B at saturation p99 (µs)", "latency"),
    ("pp_64_p999", "64 B at saturation p99.9 (µs)", None),
    ("pp_1024_p50", "1 KiB at saturation p50 (µs)", "latency"),
    ("pp_1024_p99", "1 KiB at saturation p99 (µs)", "latency"),
    ("pp_1024_p999", "1 KiB at saturation p99.9 (µs)", None),
    ("ul_64_p50", "64 B at fixed rate p50 (µs)", "latency"),
    ("ul_64_p99", "64 B at fixed rate p99 (µs)", "latency"),
    ("ul_64_p999", "64 B at fixed rate p99.9 (µs)", None),
    ("ul_1024_p50", "1 KiB at fixed rate p50 (µs)", "latency"),
    ("ul_1024_p99", "1 KiB at fixed rate p99 (µs)", "latency"),
    ("ul_1024_p999", "1 KiB at fixed rate p99.9 (µs)", None),
    ("pp_64_cpu_ms_per_1000", "proxy CPU ms per 1000 requests (64 B)", None),
    ("pp_1024_cpu_ms_per_1000", "proxy CPU ms per 1000 requests (1 KiB)", None),
    ("conn_full", "new connections/s, full handshake", "conn"),
    ("conn_full_cpu_ms", "proxy CPU ms per connection, full handshake", None),
    ("conn_resumed", "new connections/s, resumed", None),
    ("conn_resumed_cpu_ms", "proxy CPU ms per connection, resumed", None),
    ("rss_idle_kib", "RSS freshly started, both proxies (MiB)", None),
    ("rss_held_kib", "RSS with {idle} idle connections (MiB)", None),
    ("idle_kib_per_conn_orig", "KiB per idle connection, originating proxy", "idle"),
    ("idle_kib_per_conn_term", "KiB per idle connection, terminating proxy", "idle"),
    ("idle_kib_per_conn", "KiB per idle connection, per agent", "idle"),
    ("agent_cpu_gb_1", "agents' CPU-s per GB, 1 stream", "cpu_gb"),
    ("agent_cpu_gb_8", "agents' CPU-s per GB, 8 streams", "cpu_gb"),
    ("agent_cpu_ms_per_1000", "agents' CPU ms per 1000 requests (64 B)", None),
    ("agent_conn_cpu_ms", "agents' CPU ms per connection", None),
    ("agent_rss_fresh_kib", "agents' RSS freshly started (MiB)", None),
    ("agent_rss_idle_kib", "agents' RSS just before the idle connections (MiB)", None),
    ("agent_rss_held_kib", "agents' RSS with {idle} idle connections (MiB)", None),
]
# In the full path, CPU figures come from the agents: compared with the
# HAProxy pair's figure of the same kind (engine metric names).
FULLPATH_ALIASES = {
    "agent_cpu_gb_1": "cpu_gb_1",
    "agent_cpu_gb_8": "cpu_gb_8",
    "agent_cpu_ms_per_1000": "pp_64_cpu_ms_per_1000",
    "agent_conn_cpu_ms": "conn_full_cpu_ms",
}

TARGETS = {
    "tput": "≥ 1.3× HAProxy",
    "cpu_gb": "≤ 0.8",
    "latency": "added ≤ ½ HAProxy's added",
    "conn": "≥ 3× HAProxy",
    "idle": "≤ 10 KiB",
}


def load(path):
    values = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 3:
                    continue
                try:
                    values[(parts[0], parts[1])] = float(parts[2])
                except ValueError:
                    pass
    except OSError:
        pass
    return values


def fmt(value, metric):
    if value is None:
        return "–"
    if metric.endswith("_kib") and not metric.startswith("idle"):
        return f"{value / 1024:.1f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def verdict(kind, subject, base, haproxy, haproxy_base):
    """(target text, met/missed) for the subject's value; the bases are each
    side's plaintext figure, for added latency."""
    if kind is None or subject is None:
        return ("", "")
    text = TARGETS[kind]
    if kind == "tput":
        if haproxy is None:
            return (text, "no HAProxy figure")
        return (text, "met" if subject >= 1.3 * haproxy else "missed")
    if kind == "conn":
        if haproxy is None:
            return (text, "no HAProxy figure")
        return (text, "met" if subject >= 3 * haproxy else "missed")
    if kind == "cpu_gb":
        return (text, "met" if subject <= 0.8 else "missed")
    if kind == "idle":
        return (text, "met" if subject <= 10 else "missed")
    if kind == "latency":
        if haproxy is None or base is None or haproxy_base is None:
            return (text, "no HAProxy figure")
        added, added_hp = subject - base, haproxy - haproxy_base
        return (f"{text} ({added:.0f} vs {added_hp:.0f} µs)", "met" if added <= 0.5 * added_hp else "missed")
    return ("", "")


def table(values, setups, subject, base, haproxy_values, haproxy_setup, haproxy_base, idle, aliases=None):
    aliases = aliases or {}
    headers = ["measure"] + setups + [f"{subject} ÷ {base}", f"{subject} ÷ HAProxy", "target", "met?"]
    print("| " + " | ".join(headers) + " |")
    print("| --- " + "| ---: " * (len(setups) + 2) + "| --- | --- |")
    for metric, label, kind in ROWS:
        row = [values.get((s, metric)) for s in setups]
        if all(v is None for v in row):
            continue
        hp = haproxy_values.get((haproxy_setup, aliases.get(metric, metric)))
        if hp is None:
            hp = haproxy_values.get((haproxy_setup, metric))
        sub, b = values.get((subject, metric)), values.get((base, metric))
        target, met = verdict(kind, sub, b, hp, haproxy_values.get((haproxy_base, metric)))
        cells = [label.format(idle=idle)] + [fmt(v, metric) for v in row]
        # A plaintext baseline spends no proxy CPU: a ratio to it means nothing.
        cells += ["–" if "cpu" in metric else ratio(sub, b), ratio(sub, hp), target, met]
        print("| " + " | ".join(cells) + " |")


def hbone_table(values):
    """HBONE (pooled streams) beside per-connection mTLS and HAProxy, with
    issue 16's goals: conn/s at least 10x HAProxy's full handshakes, one
    stream's throughput within 10 % of direct mTLS."""
    if not any(s == "meshlock_hbone" for (s, _) in values):
        return
    print("\n**HBONE**, the meshlock pair speaking HBONE (every connection a stream of one pooled tunnel):\n")
    print("| measure | meshlock mTLS | meshlock HBONE | HAProxy | HBONE ÷ mTLS | HBONE ÷ HAProxy | goal | met? |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    rows = [("conn_full", "new connections/s", "≥ 10× HAProxy", lambda h, m, hp: h >= 10 * hp),
            ("gbit_1", "throughput, 1 stream (Gbit/s)", "within 10 % of mTLS", lambda h, m, hp: h >= 0.9 * m),
            ("gbit_8", "throughput, 8 streams (Gbit/s)", "", None),
            ("pp_64_p50", "64 B ping-pong p50 (µs)", "", None),
            ("pp_64_p99", "64 B ping-pong p99 (µs)", "", None),
            ("conn_full_cpu_ms", "CPU ms per connection", "", None),
            ("idle_kib_per_conn_orig", "KiB per idle connection, originating side", "", None)]
    for metric, label, goal, check in rows:
        h, m, hp = (values.get((s, metric)) for s in ("meshlock_hbone", "meshlock", "haproxy"))
        if h is None:
            continue
        met = "" if check is None or m is None or hp is None else ("met" if check(h, m, hp) else "missed")
        print(f"| {label} | {fmt(m, metric)} | {fmt(h, metric)} | {fmt(hp, metric)} | {ratio(h, m)} | {ratio(h, hp)} | {goal} | {met} |")
    direct = values.get(("direct", "pp_64_p50"))
    h, m = values.get(("meshlock_hbone", "pp_64_p50")), values.get(("meshlock", "pp_64_p50"))
    if None not in (direct, h, m):
        print(f"\n64 B round trip added over direct: HBONE {h - direct:.0f} µs, per-connection mTLS {m - direct:.0f} µs.")


def shortcut_table(values):
    """The pod-local shortcut (issue 17) beside mTLS without it, with the
    issue's goals, all against the same run's plaintext."""
    setups = [s for s in ("shortcut", "shortcut_both") if any(k == s for (k, _) in values)]
    if not setups:
        return
    names = {"mtls": "mTLS", "shortcut": "mTLS + shortcut (app→agent)", "shortcut_both": "mTLS + shortcut (both ways)"}
    print("\n**Pod-local shortcut** (sockops + sk_msg; same cluster, agents restarted with `--pod-leg-shortcut`):\n")
    cols = ["mtls"] + setups
    print("| measure | plaintext | " + " | ".join(names[c] for c in cols) + " | goal |")
    print("| --- | ---: | " + "---: | " * len(cols) + "--- |")
    plain = lambda m: values.get(("plaintext", m))
    rows = [("agent_cpu_gb_1", "agents' CPU-s per GB, 1 stream", lambda v: v, "≤ 1.1"),
            ("agent_cpu_gb_8", "agents' CPU-s per GB, 8 streams", lambda v: v, ""),
            ("gbit_1", "throughput, 1 stream ÷ plaintext", lambda v: v / plain("gbit_1") if plain("gbit_1") else None, "≥ 0.65×"),
            ("gbit_8", "throughput, 8 streams ÷ plaintext", lambda v: v / plain("gbit_8") if plain("gbit_8") else None, ""),
            ("pp_64_p50", "64 B RTT p50 added over plaintext (µs)",
             lambda v: v - plain("pp_64_p50") if plain("pp_64_p50") is not None else None, "≤ +20 µs"),
            ("pp_1024_p50", "1 KiB RTT p50 added over plaintext (µs)",
             lambda v: v - plain("pp_1024_p50") if plain("pp_1024_p50") is not None else None, "")]
    for metric, label, derive, goal in rows:
        cells = []
        for c in cols:
            v = values.get((c, metric))
            d = derive(v) if v is not None else None
            cells.append("–" if d is None else (f"{d:.2f}×" if "÷" in label else f"{d:.2f}" if "CPU" in label else f"{d:+.1f}"))
        p = plain(metric)
        print(f"| {label} | {fmt(p, metric) if 'CPU' not in label else '–'} | " + " | ".join(cells) + f" | {goal} |")
    for s in setups:
        r = values.get((s, "leg_redirected_b"))
        if r is not None:
            print(f"\n{names[s]}: node-b's sk_msg redirected {r:,.0f} messages in the run.")


def main():
    profile, path = sys.argv[1], sys.argv[2]
    values = load(path)
    idle = next((f"{v:,.0f}" for (s, m), v in values.items() if m == "idle_held" and v > 0), "N")
    if profile == "engine":
        table(values, ["direct", "meshlock", "haproxy", "stunnel"], "meshlock", "direct", values, "haproxy", "direct", idle)
        for setup in ["meshlock", "haproxy", "stunnel"]:
            held = values.get((setup, "idle_held"))
            if held is not None and f"{held:,.0f}" != idle:
                print(f"\n{setup} held {held:,.0f} idle connections, not {idle}.")
        errors = {s: int(v) for (s, m), v in values.items() if m.endswith("_errors") and v > 0}
        if errors:
            print(f"\nConnection errors during conn/s runs: {errors}.")
        hbone_table(values)
        share = values.get(("meshlock", "conn_resumed_share"))
        if share is not None:
            print(f"\nmeshlock resumed {share:.0%} of its handshakes in the resumption run (terminating side's counters).")
    else:
        engine = load(sys.argv[3]) if len(sys.argv) > 3 else {}
        if not engine:
            print("(No engine section results in this run: the HAProxy columns and ratios are empty.)\n")
        table(values, ["plaintext", "capture", "mtls"], "mtls", "plaintext", engine, "haproxy", "direct", idle,
              FULLPATH_ALIASES)
        hp = [m for (s, m) in engine if s == "haproxy"]
        if hp:
            print("\nHAProxy figures: the engine section's loopback HAProxy pair, measured in the same run.")
        shortcut_table(values)


if __name__ == "__main__":
    main()
