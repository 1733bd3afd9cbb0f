#!/usr/bin/env bash
# The Jepsen-style campaign quoted in the README: every nemesis on every
# workload, and ten seeded runs of the two headline nemeses.
#
#   cargo build --release --bins
#   scripts/jepsen-campaign.sh [target/release] [target/campaign]
#
# Each run starts a fresh 3-node cluster on loopback. One line per run goes to
# OUT/rcs (rc=0: every checker passed); each run's summary, history and plot
# are in OUT/<workload>-<nemesis>-<seed>/. About 50 minutes on 2 cores.
#
# The power-loss campaign (docs/POWERLOSS_CAMPAIGN.md) instead: nodes on
# powerfs (FUSE: root, or fusermount3), KEEL_CAMPAIGN_REPEAT (default 8) runs
# of each workload under the power-loss nemesis, seeds 7001..., 40 s each
# (single-node, whole-cluster, single-node, whole-cluster power losses),
# about 25 minutes:
#
#   KEEL_CAMPAIGN=power-loss scripts/jepsen-campaign.sh target/release target/plcampaign
#
# The bank campaign: the bank workload (transfers by message between
# partitions) once under every nemesis, seed 8000, KEEL_CAMPAIGN_TIME (20) s
# each, about 10 minutes (power-loss and wipe need root or fusermount3 for
# powerfs):
#
#   KEEL_CAMPAIGN=bank scripts/jepsen-campaign.sh target/release target/bankcampaign
set -u
BIN=${1:-target/release}
OUT=${2:-target/campaign}
TIME=${KEEL_CAMPAIGN_TIME:-30}
REPEAT=${KEEL_CAMPAIGN_REPEAT:-10}
mkdir -p "$OUT"
run() { # workload nemesis seed [extra flags]
  local w=$1 n=$2 s=$3
  shift 3
  "$BIN/keel-jepsen" --workload "$w" --nemesis "$n" --seed "$s" --time "$TIME" \
    --post-heal-secs 12 --dir "$OUT/$w-$n-$s" "$@" >"$OUT/$w-$n-$s.out" 2>&1
  echo "$w $n $s rc=$?" >>"$OUT/rcs"
}
if [ "${KEEL_CAMPAIGN:-}" = power-loss ]; then
  TIME=${KEEL_CAMPAIGN_TIME:-40}
  REPEAT=${KEEL_CAMPAIGN_REPEAT:-8}
  for i in $(seq 1 "$REPEAT"); do
    for w in set register counter; do
      run "$w" power-loss $((7000 + i))
    done
  done
  echo done >>"$OUT/rcs"
  exit 0
fi
if [ "${KEEL_CAMPAIGN:-}" = bank ]; then
  TIME=${KEEL_CAMPAIGN_TIME:-20}
  for n in partition-random-node partition-leader partition-halves bridge kill pause flap \
    stall loss one-way slow-disk slow-node power-loss wipe; do
    run bank "$n" 8000
  done
  echo done >>"$OUT/rcs"
  exit 0
fi
for n in partition-random-node partition-leader partition-halves bridge kill pause flap stall; do
  for w in set register counter; do
    run "$w" "$n" 5000
  done
done
for i in $(seq 1 $((REPEAT - 1))); do
  for w in set register; do
    run "$w" partition-random-node $((5000 + i))
    run "$w" kill $((5000 + i))
  done
done
echo done >>"$OUT/rcs"
