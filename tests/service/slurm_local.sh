# A one-node SLURM on localhost for the service tests (../shared/slurm-local.md): munged,
# slurmctld and slurmd as root with a temporary config (absolute paths, unprivileged ports,
# no cgroups, no accounting). Sourced; slurm_start DIR exports SLURM_CONF, slurm_stop ends
# the daemons by the pids in their pid files.
slurm_start() {
  local dir=$1
  for cmd in slurmctld slurmd sbatch munged; do
    command -v "$cmd" >/dev/null || { echo "slurm_start: $cmd not installed (run scripts/setup.sh)"; return 1; }
  done
  [ "$(id -u)" = 0 ] || { echo "slurm_start: needs root (SlurmUser=root)"; return 1; }
  mkdir -p "$dir"/{state,spool,log}
  SLURM_DIR=$dir
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    if [ ! -s /etc/munge/munge.key ]; then mungekey -c 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null; chmod 400 /etc/munge/munge.key
    su -s /bin/sh munge -c "munged -f" 2>"$dir/log/munged.err" || munged -f 2>>"$dir/log/munged.err" || true
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || { cat "$dir/log/munged.err"; return 1; }
    STARTED_MUNGED=1
  fi
  local mem host
  host=$(hostname -s)
  mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 9 / 10 ))
  cat > "$dir/slurm.conf" <<CONF
ClusterName=shardqtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -f "$SLURM_CONF" || { echo "slurmctld failed:"; tail -n 20 "$dir/log/slurmctld.log"; return 1; }
  slurmd -f "$SLURM_CONF" || { echo "slurmd failed:"; tail -n 20 "$dir/log/slurmd.log"; return 1; }
  for _ in $(seq 100); do
    sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)' && return 0
    sleep 0.2
  done
  echo "slurm node never became idle:"; sinfo 2>&1; tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log"
  return 1
}

slurm_stop() {
  local f pid
  for f in "$SLURM_DIR/slurmd.pid" "$SLURM_DIR/slurmctld.pid"; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  if [ -n "${STARTED_MUNGED:-}" ] && [ -s /run/munge/munged.pid ]; then kill -TERM "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
}
