#!/usr/bin/env bash
# keel beside etcd on the same machine, measured in one run with the same load
# generator: wrk (2 threads; 1 for the sequential phase), 100 keys, a 5 s warm-up,
# then SECS seconds (default 15) at 1, 32 and 128 connections, against one member's
# HTTP port of each 3-node cluster on loopback.
#   keel: POST /Counter/k<i>/add (r = 2, every acknowledged append fdatasync'ed)
#   etcd: POST /v3/kv/put through its JSON gateway (Raft, fsynced WAL): a blind
#         durable write, less work than a counter add
# Needs Debian's etcd-server and wrk (apt-get install etcd-server wrk) and keel's
# release binaries (cargo build --release --bins). Usage:
#   scripts/compare-etcd.sh [keel-bin-dir] [out-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bins=${1:-$here/../target/release}
out=${2:-$(mktemp -d -t keel-vs-etcd-XXXXXX)}
secs=${SECS:-15}
conns=${CONNS:-"1 32 128"}
for tool in etcd wrk "$bins/keel"; do
  command -v "$tool" > /dev/null || { echo "missing $tool (apt-get install etcd-server wrk; cargo build --release --bins)" >&2; exit 2; }
done
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; wait 2> /dev/null || true; }
trap cleanup EXIT

# One wrk phase: target url, lua script, connections, label.
phase() {
  local url=$1 script=$2 c=$3 label=$4 t=2
  [ "$c" -eq 1 ] && t=1
  wrk -t$t -c"$c" -d5s -s "$script" "$url" > /dev/null
  wrk -t$t -c"$c" -d"${secs}s" --latency -s "$script" "$url" > "$out/$label-c$c.txt"
  printf '%-5s %4s conns  %9s req/s  p50 %9s  p99 %9s  %s\n' "$label" "$c" \
    "$(awk '/Requests\/sec/ {print $2}' "$out/$label-c$c.txt")" \
    "$(awk '$1 == "50%" {print $2}' "$out/$label-c$c.txt")" \
    "$(awk '$1 == "99%" {print $2}' "$out/$label-c$c.txt")" \
    "$(grep -E 'Non-2xx|Socket errors' "$out/$label-c$c.txt" | tr -s ' ' | tr '\n' ' ')" | tee -a "$out/summary.txt"
}

wait_http() { # url, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -s -o /dev/null -m 1 "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)" | tee "$out/summary.txt"
echo "etcd $(etcd --version | head -1 | awk '{print $3}'), keel $("$bins/keel" --version | awk '{print $2}'); wrk, 100 keys, ${secs}s per phase after a 5 s warm-up" | tee -a "$out/summary.txt"

# etcd: 3 members on loopback, each its own data directory on the same disk.
cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name e$i --data-dir "$out/etcd/e$i" \
    --listen-peer-urls http://127.0.0.1:2380$i --initial-advertise-peer-urls http://127.0.0.1:2380$i \
    --listen-client-urls http://127.0.0.1:2379$i --advertise-client-urls http://127.0.0.1:2379$i \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token keel-compare \
    --log-level error > "$out/etcd-e$i.log" 2>&1 &
  pids+=($!)
done
wait_http http://127.0.0.1:23791/health 30
for _ in $(seq 1 100); do curl -s http://127.0.0.1:23791/health | grep -q '"health":"true"' && break; sleep 0.2; done
# Send the load to the leader, as the issue's numbers did ("through its leader").
leader=1
for i in 1 2 3; do
  if curl -s -XPOST http://127.0.0.1:2379$i/v3/maintenance/status -d '{}' | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'; then leader=$i; fi
done
for c in $conns; do phase "http://127.0.0.1:2379$leader" "$here/wrk-etcd-put.lua" "$c" etcd; done
cleanup; pids=()

# keel: the layout `keel init` writes, three `keel node` processes.
"$bins/keel" init --dir "$out/keel" --base-port 7600 > /dev/null
for i in 1 2 3; do
  (cd "$out/keel/n$i" && exec "$bins/keel" node --config n$i.toml > "$out/keel-n$i.log" 2>&1) &
  pids+=($!)
done
for _ in $(seq 1 300); do
  "$bins/keelctl" --url http://127.0.0.1:7701 status 2> /dev/null | awk '$3 == "Leader"' | wc -l | grep -q '^4$' && break
  sleep 0.2
done
for c in $conns; do phase http://127.0.0.1:7701 "$here/wrk-counter.lua" "$c" keel; done
echo "results in $out"
