#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for running nnd's jobs with `launcher: srun` (as
# root): munged, slurmctld and slurmd with their configuration, keys, sockets, spool and logs
# all under DIR, nothing under /etc. Clients find it through SLURM_CONF. `SlurmTests` and
# docs/scale-out.md use it; Debian's slurmd, slurmctld, slurm-client and munge provide it.
#
#   scripts/slurm-local.sh up DIR     start it (stopping the one started before, wherever it
#                                     was: they share ports); prints the SLURM_CONF line to export
#   scripts/slurm-local.sh down       stop it
#
# e.g.  scripts/slurm-local.sh up /tmp/slurm && export SLURM_CONF=/tmp/slurm/slurm.conf
#       srun -n 2 .build/release/nnd train etc/nnd/runs/mnist-seed.yaml --epochs 1
set -euo pipefail
# Where the running cluster's files are.
running=/run/nnd-slurm-local.dir

down() {
  [ -f "$running" ] || return 0
  local dir
  dir=$(cat "$running")
  for daemon in slurmd slurmctld munged; do
    [ -f "$dir/$daemon.pid" ] && kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
  done
  for daemon in slurmd slurmctld munged; do
    for _ in $(seq 50); do
      [ -f "$dir/$daemon.pid" ] && kill -0 "$(cat "$dir/$daemon.pid")" 2>/dev/null || break
      sleep 0.1
    done
    rm -f "$dir/$daemon.pid"
  done
  rm -f "$running"
}

up() {
  local dir=$1
  [ "$(id -u)" = 0 ] || { echo "slurm-local: run as root (slurmd starts jobs as their users)" >&2; exit 2; }
  for tool in munged slurmctld slurmd srun sinfo; do
    command -v "$tool" >/dev/null || { echo "slurm-local: $tool missing (apt-get install slurmd slurmctld slurm-client munge)" >&2; exit 2; }
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  down
  echo "$dir" > "$running"
  # A fresh spool: jobs left by an earlier start in DIR would be recovered and hold the node.
  rm -rf "$dir/spool"
  # (TmpFS too: PMIx's per-step directories, named by job id, which restarts at 1 in a fresh
  # cluster; one left in /tmp by an earlier cluster's job 1 made every step launch fail.)
  mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/spool/tmp" "$dir/munge"
  chmod 700 "$dir/munge"
  [ -f "$dir/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"; }
  local host
  host=$(hostname -s)
  cat > "$dir/slurm.conf" <<CONF
ClusterName=nnd-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
TmpFS=$dir/spool/tmp
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldPort=6917
SlurmdPort=6918
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  # The daemons' standard streams go to their logs: a caller that reads this script's output
  # to its end (a test) would otherwise wait for them to exit.
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --seed-file="$dir/munge/munged.seed" --log-file="$dir/munged.log" \
    </dev/null >>"$dir/munged.log" 2>&1
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -f "$SLURM_CONF" </dev/null >>"$dir/slurmctld.log" 2>&1
  slurmd -f "$SLURM_CONF" </dev/null >>"$dir/slurmd.log" 2>&1
  for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.2
  done
  echo "slurm-local: the node did not become idle; logs in $dir" >&2
  sinfo >&2 || true
  exit 1
}

case "${1:-}" in
  up) up "${2:?usage: slurm-local.sh up DIR}" ;;
  down) down ;;
  *) echo "usage: slurm-local.sh up DIR | down" >&2; exit 2 ;;
esac
