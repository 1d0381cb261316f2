#!/usr/bin/env bash
# Soaks the simulator: SEEDS seeds of each workload (Paxos, then the lock
# service), split over JOBS processes, in a release build.
#   SEEDS=100000 JOBS=2 coordinator/scripts/sim-soak.sh
#   WORKLOADS=locks SEEDS=50000 FIRST=5000000 coordinator/scripts/sim-soak.sh
# PAXLOCK_SIM_SLOW_CLIENT_LINKS=1 runs the lock seeds over slow client links,
# PAXLOCK_SIM_LATE_WAKEUPS=1 with woken requests answered late (and so on:
# every PAXLOCK_SIM_* world switch of sim_locks.rs applies).
# A failing seed prints its one-line repro (PAXLOCK_SIM_SEED=... cargo test ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-10000}
JOBS=${JOBS:-2}
FIRST=${FIRST:-0}
WORKLOADS=${WORKLOADS:-"paxos locks"}
cargo test --release -j "$JOBS" -p paxlock-sim --test sim_paxos --test sim_locks --no-run
per=$(( (SEEDS + JOBS - 1) / JOBS ))
status=0
for workload in $WORKLOADS; do
  case "$workload" in
    paxos) test=sim_paxos; filter=every_seed_keeps_safety_and_heals_to_liveness ;;
    locks) test=sim_locks; filter=every_seed_keeps_lock_safety_and_heals_to_liveness ;;
    *) echo "unknown workload $workload (paxos, locks)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  pids=()
  for j in $(seq 0 $((JOBS - 1))); do
    PAXLOCK_SIM_FIRST_SEED=$((FIRST + j * per)) PAXLOCK_SIM_SEEDS=$per \
      cargo test --release -p paxlock-sim --test "$test" "$filter" -- --exact --nocapture 2>&1 \
      | grep -E "PAXLOCK_SIM_SEED=|seeds|test result" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  secs=$(( $(date +%s) - start ))
  echo "$workload: $((per * JOBS)) seeds in ${secs} s ($(( per * JOBS * 60 / (secs > 0 ? secs : 1) )) seeds/min)"
done
exit $status
