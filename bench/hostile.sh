#!/usr/bin/env bash
# The mesh of strangers in the simulator: for N = 100 and 1,000 nodes and
# K = 10,000 active blocks, the mesh with no hostile member and with f = 1,
# 5 % and 10 % of its members hostile, one run per behaviour (a home that
# says yes to everything, one that says no, forged penalties, inflated and
# future-dated counts, restart claims, and a mix); every node's clock off by
# up to ±10 minutes, a node restarting every 30 s, each node noticing a
# membership change after its own 2–7 s. Then a split of a fifth of a
# 100-node mesh lasting 20 minutes, past a forget_after of 10 minutes.
# The cost at N = 1,000, K = 1 M (every check and the standing on) is the
# plain mesh-sim run: mesh-sim --nodes 1000 --blocks 1000000.
#   bash bench/hostile.sh [OUT]     (default bench/results/mesh-hostile-DATE.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/mesh-hostile-$(date +%Y%m%d).txt}
cargo build --release -p magicmx-mesh-sim
sim=./target/release/mesh-sim
common=(--blocks 10000 --skew-ms 600000 --restart-every-s 30)
{
  echo "# bash bench/hostile.sh — $(date -u) on $(nproc) cores; commit $(git rev-parse --short HEAD)"
  echo "# every run: ${common[*]} (notice jitter 5 s, loss 1 %, crash 1 %)"
  $sim --nodes 100 --blocks 10 --behaviour none | sed -n 1,2p
  for n in 100 1000; do
    $sim --nodes $n "${common[@]}" --behaviour none | tail -1
    for f in 1 0.05 0.1; do
      for b in yes no penalties inflate restarts mixed; do
        $sim --nodes $n "${common[@]}" --hostile $f --behaviour $b | tail -1
      done
    done
  done
  echo
  echo "# a split of 20 % of the nodes for 1,200 s, forget_after 600 s (measured over 1,500 s)"
  ./target/release/mesh-sim --nodes 100 --blocks 10000 --partition-share 0.2 --split-s 1200 --forget-s 600 --measure-s 1500 --crash-share 0 --behaviour none
} 2>&1 | tee "$out"
