#!/usr/bin/env bash
# Stop the one-node cluster scripts/slurm-up.sh started: exactly its daemons, by their PIDs.
set -uo pipefail
STATE=${TOY_QUANTA_SLURM_STATE:-/var/tmp/toy_quanta_slurm}
if [ ! -f "$STATE/pids" ]; then echo "slurm-down.sh: no cluster of slurm-up.sh is up ($STATE/pids)"; exit 0; fi
scancel --user=root >/dev/null 2>&1 || true
tac "$STATE/pids" | while read -r pid; do kill "$pid" 2>/dev/null || true; done
for _ in $(seq 50); do
  alive=0
  while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$STATE/pids"
  [ "$alive" -eq 0 ] && break
  sleep 0.2
done
while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$STATE/pids"
rm -f "$STATE/pids"
echo "slurm-down.sh: stopped"
