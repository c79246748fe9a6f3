#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try a SLURM sweep before the real cluster
# (docs/scaling-out.md, "Trying SLURM on one machine"). Run as root:
#
#   sudo scripts/slurm-up.sh               # installs slurmctld, slurmd, munge if missing (Debian/Ubuntu)
#   sudo scripts/slurm-up.sh --accounting  # and slurmdbd on a MariaDB of its own: sacct knows every job
#   sudo scripts/slurm-up.sh --cpus 8      # the node offers 8 CPUs (default: this machine's), so more
#                                          # one-CPU jobs run side by side than it has cores (tests)
#   toy-quanta -m hydra/launcher=vmap_submitit_slurm seed=0,1 ...
#   sudo scripts/slurm-down.sh
#
# Without --accounting, sacct has no record of jobs ("accounting storage is disabled"), as on some
# real clusters. With it, a MariaDB server of its own (data, socket and port 16033 under $STATE, so
# a MariaDB already on the machine is left alone) stores slurmdbd's records. The daemons run in the
# foreground of background processes whose PIDs are kept in $STATE/pids, so slurm-down.sh stops
# exactly those.
set -euo pipefail
STATE=${TOY_QUANTA_SLURM_STATE:-/var/tmp/toy_quanta_slurm}
ACCOUNTING=0
CPUS=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --accounting) ACCOUNTING=1 ;;
    --cpus)
      if ! [[ "${2:-}" =~ ^[1-9][0-9]*$ ]]; then echo "slurm-up.sh: --cpus='${2:-}' is not allowed: a whole number >= 1" >&2; exit 2; fi
      CPUS=$2; shift ;;
    *) echo "slurm-up.sh: unknown argument '$1' (allowed: --accounting, --cpus N)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" -ne 0 ]; then echo "slurm-up.sh: run it as root (the daemons need it)" >&2; exit 2; fi
if [ -f "$STATE/pids" ]; then echo "slurm-up.sh: a cluster is up already ($STATE/pids); slurm-down.sh first" >&2; exit 2; fi
PACKAGES=()
for tool in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge; do
  command -v "${tool%%:*}" >/dev/null || PACKAGES+=("${tool#*:}")
done
if [ "$ACCOUNTING" -eq 1 ]; then
  for tool in slurmdbd:slurmdbd mariadbd:mariadb-server; do
    command -v "${tool%%:*}" >/dev/null || PACKAGES+=("${tool#*:}")
  done
fi
mkdir -p "$STATE/log"
if [ "${#PACKAGES[@]}" -gt 0 ]; then
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}" > "$STATE/log/apt.out" 2>&1; then
    echo "slurm-up.sh: apt-get install ${PACKAGES[*]} failed: $(tail -1 "$STATE/log/apt.out")" >&2; exit 1
  fi
fi
HOST=$(hostname -s)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$STATE"/{spool,state,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
# munge: a key, and the daemon as the munge user
if [ ! -s /etc/munge/munge.key ]; then dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 status=none; fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
if [ "$ACCOUNTING" -eq 1 ]; then
  ACCOUNTING_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
  ACCOUNTING_CONF="AccountingStorageType=accounting_storage/none"
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=toy_quanta
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
$ACCOUNTING_CONF
ReturnToService=2
SlurmdParameters=config_overrides
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
if [ "$ACCOUNTING" -eq 1 ]; then
  # MariaDB of its own: data, socket and a TCP port on 127.0.0.1 under $STATE
  DB="$STATE/mysql"
  if [ ! -d "$DB/mysql" ]; then
    mkdir -p "$DB" && chown mysql:mysql "$DB"
    mariadb-install-db --user=mysql --datadir="$DB" --auth-root-authentication-method=socket > "$STATE/log/mariadb-install.out" 2>&1
  fi
  mkdir -p "$STATE/mysql-run" && chown mysql:mysql "$STATE/mysql-run"
  SOCK="$STATE/mysql-run/mysqld.sock"
  mariadbd --user=mysql --datadir="$DB" --socket="$SOCK" --port=16033 --bind-address=127.0.0.1 \
    --pid-file="$STATE/mysql-run/mariadbd.pid" > "$STATE/log/mariadbd.out" 2>&1 &
  echo $! >> "$STATE/pids"
  for _ in $(seq 150); do mariadb --socket="$SOCK" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  if ! mariadb --socket="$SOCK" -e 'SELECT 1' >/dev/null 2>&1; then
    echo "slurm-up.sh: MariaDB did not start within 30 s; see $STATE/log/mariadbd.out (slurm-down.sh cleans up)" >&2; exit 1
  fi
  PASS=$(cat "$STATE/dbpass" 2>/dev/null || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' | tee "$STATE/dbpass")
  chmod 600 "$STATE/dbpass"
  mariadb --socket="$SOCK" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  install -m 600 /dev/null /etc/slurm/slurmdbd.conf  # slurmdbd refuses a config others can read
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=16033
StorageUser=slurm
StoragePass=$PASS
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
CONF
  /usr/sbin/slurmdbd -D > "$STATE/log/slurmdbd.out" 2>&1 &
  echo $! >> "$STATE/pids"
  for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  if ! sacctmgr -n list cluster >/dev/null 2>&1; then
    echo "slurm-up.sh: slurmdbd did not answer within 20 s; see $STATE/log/slurmdbd.log (slurm-down.sh cleans up)" >&2; exit 1
  fi
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx toy_quanta; then
    sacctmgr -i add cluster toy_quanta >/dev/null
  fi
fi
/usr/sbin/slurmctld -D -i > "$STATE/log/slurmctld.out" 2>&1 &
echo $! >> "$STATE/pids"
/usr/sbin/slurmd -D > "$STATE/log/slurmd.out" 2>&1 &
echo $! >> "$STATE/pids"
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-up.sh: one-node cluster up: node $HOST, $CPUS CPUs, partition debug, accounting $([ "$ACCOUNTING" -eq 1 ] && echo 'by slurmdbd' || echo none) (logs in $STATE/log)"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-up.sh: the node did not come up within 20 s; see $STATE/log" >&2
exit 1
