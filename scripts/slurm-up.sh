#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try a SLURM sweep before the real cluster
# (docs/scaling-out.md, "Trying SLURM on one machine"). Run as root:
#
#   sudo scripts/slurm-up.sh            # installs slurmctld, slurmd, munge if missing (Debian/Ubuntu)
#   toy-quanta -m hydra/launcher=vmap_submitit_slurm seed=0,1 ...
#   sudo scripts/slurm-down.sh
#
# No accounting (sacct has no record of finished jobs). The daemons run in the foreground of
# background processes whose PIDs are kept in $STATE/pids, so slurm-down.sh stops exactly those.
set -euo pipefail
STATE=${TOY_QUANTA_SLURM_STATE:-/var/tmp/toy_quanta_slurm}
if [ "$(id -u)" -ne 0 ]; then echo "slurm-up.sh: run it as root (the daemons need it)" >&2; exit 2; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi
if [ -f "$STATE/pids" ]; then echo "slurm-up.sh: a cluster is up already ($STATE/pids); slurm-down.sh first" >&2; exit 2; fi
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$STATE"/{spool,state,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
# munge: a key, and the daemon as the munge user
if [ ! -s /etc/munge/munge.key ]; then dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 status=none; fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=toy_quanta
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=10
MinJobAge=300
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
runuser -u munge -- /usr/sbin/munged --foreground > "$STATE/log/munged.out" 2>&1 &
echo $! > "$STATE/pids"
for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
/usr/sbin/slurmctld -D -i > "$STATE/log/slurmctld.out" 2>&1 &
echo $! >> "$STATE/pids"
/usr/sbin/slurmd -D > "$STATE/log/slurmd.out" 2>&1 &
echo $! >> "$STATE/pids"
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-up.sh: one-node cluster up: node $HOST, $CPUS CPUs, partition debug (logs in $STATE/log)"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-up.sh: the node did not come up within 20 s; see $STATE/log" >&2
exit 1
