#!/usr/bin/env bash
# `make bench`: runs every benchmark part (tests/bench/<part>/run.sh, each
# printing a Markdown section with the commands it ran) and writes the figures
# to docs/benchmarks.md with the machine they were measured on.
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/docs/benchmarks.md"
tmp=$(mktemp)
# Parts hand results to later parts here (the full path compares with the
# engine section's HAProxy pair).
export MESHLOCK_BENCH_OUT
MESHLOCK_BENCH_OUT=$(mktemp -d /tmp/meshlock-bench-XXXXXX)
trap 'rm -rf "$tmp" "$MESHLOCK_BENCH_OUT"' EXIT
started=$(date +%s)

version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
settings=$(env | grep '^MESHLOCK_BENCH_[A-Z_]*=' | grep -v '^MESHLOCK_BENCH_OUT=' | sort | tr '\n' ' ' || true)

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (tests/bench/run.sh). Measured figures only; rerun to refresh."
  echo "What limits them, with profiles: docs/performance.md."
  echo
  echo "- command: \`${settings}bash tests/bench/run.sh $(basename "$build")\` (what \`make bench\` runs)"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB"
  echo "- load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- kernel: $(uname -r)"
  echo "- commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- agent tests 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- packages: haproxy $(version haproxy), stunnel4 $(version stunnel4), openssl $(version openssl),"\
       "BoringSSL (android-libboringssl-dev) $(version android-libboringssl-dev), iperf3 $(version iperf3), sockperf $(version sockperf)"
  for script in "$root"/tests/bench/*/run.sh; do
    [ -e "$script" ] || continue
    part=$(basename "$(dirname "$script")")
    echo
    echo "## $part"
    echo
    echo "bench: $part" >&2
    if ! bash "$script" "$build"; then
      echo
      echo "**$part: the benchmark failed; see the output of \`make bench\`.**"
    fi
  done
  echo
  echo "Whole run: $(( ($(date +%s) - started) / 60 )) min."
} | tee "$tmp"
cp "$tmp" "$out"
echo "wrote $out" >&2
