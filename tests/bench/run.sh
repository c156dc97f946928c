#!/usr/bin/env bash
# `make bench`: runs every benchmark part (tests/bench/<part>/run.sh, each
# printing a Markdown section with the commands it ran) and writes the figures
# to docs/benchmarks.md with the machine they were measured on.
set -euo pipefail
build=$(realpath "${1:-build}")
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/docs/benchmarks.md"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (tests/bench/run.sh). Measured figures only; rerun to refresh."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(lscpu | sed -n 's/^Model name: *//p')"
  echo "- kernel: $(uname -r)"
  echo "- commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  for script in "$root"/tests/bench/*/run.sh; do
    [ -e "$script" ] || continue
    part=$(basename "$(dirname "$script")")
    echo
    echo "## $part"
    echo
    if ! bash "$script" "$build"; then
      echo "**$part: the benchmark failed; see the output of \`make bench\`.**"
    fi
  done
} | tee "$tmp"
cp "$tmp" "$out"
echo "wrote $out" >&2
