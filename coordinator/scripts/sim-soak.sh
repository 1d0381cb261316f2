#!/usr/bin/env bash
# Soak the simulator: SEEDS seeds split over JOBS processes (release build).
#   SEEDS=100000 JOBS=2 ./soak.sh
# A failing seed prints its one-line repro (PAXLOCK_SIM_SEED=... cargo test ...).
set -euo pipefail
SEEDS=${SEEDS:-10000}
JOBS=${JOBS:-2}
FIRST=${FIRST:-0}
cargo test --release -j "$JOBS" -p paxlock-coordinator --test sim_paxos --no-run
per=$(( (SEEDS + JOBS - 1) / JOBS ))
pids=()
for j in $(seq 0 $((JOBS - 1))); do
  PAXLOCK_SIM_FIRST_SEED=$((FIRST + j * per)) PAXLOCK_SIM_SEEDS=$per \
    cargo test --release -p paxlock-coordinator --test sim_paxos every_seed -- --nocapture 2>&1 | grep -E "PAXLOCK_SIM_SEED=|seeds x|test result" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
