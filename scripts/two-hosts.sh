#!/usr/bin/env bash
# Two hosts on one machine, for running nnd's MPI jobs across a real network stack (as root):
# two network namespaces, nnd-host-a (10.231.0.1) and nnd-host-b (10.231.0.2), each with its own
# interface, address and TCP stack, joined by a bridge to this namespace (10.231.0.254, the head
# node where the daemon and mpirun run). mpirun reaches a host through DIR/netns-rsh, a stand-in
# for ssh that runs its command in the host's namespace; the files stay shared, as on hosts with
# shared storage. `TwoHostTests` and docs/scale-out.md use it.
#
#   scripts/two-hosts.sh up DIR     make them; writes DIR/netns-rsh and DIR/hostfile, prints the
#                                   mpirun arguments (for a spec's distributed.launcher_args too)
#   scripts/two-hosts.sh down       remove them
#
# e.g.  scripts/two-hosts.sh up /tmp/hosts
#       mpirun --allow-run-as-root -np 2 --hostfile /tmp/hosts/hostfile --bind-to none \
#         $(scripts/two-hosts.sh args /tmp/hosts) .build/release/nnd bench --workers 1
set -euo pipefail
hosts=(nnd-host-a nnd-host-b)
addresses=(10.231.0.1 10.231.0.2)

args() {
  echo "--mca plm_rsh_agent $1/netns-rsh --mca btl_tcp_if_include 10.231.0.0/24 --mca oob_tcp_if_include 10.231.0.0/24"
}

down() {
  ip link del nnd-br 2>/dev/null || true
  for ns in "${hosts[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}

up() {
  local dir=$1
  [ "$(id -u)" = 0 ] || { echo "two-hosts: run as root (it makes network namespaces)" >&2; exit 2; }
  command -v ip >/dev/null || { echo "two-hosts: ip missing (apt-get install iproute2)" >&2; exit 2; }
  down
  mkdir -p "$dir"
  ip link add nnd-br type bridge
  ip addr add 10.231.0.254/24 dev nnd-br
  ip link set nnd-br up
  local cases=""
  for i in "${!hosts[@]}"; do
    local ns=${hosts[$i]} address=${addresses[$i]}
    ip netns add "$ns"
    ip link add "nnd-h$i" type veth peer name "nnd-h$i-port"
    ip link set "nnd-h$i" netns "$ns"
    ip link set "nnd-h$i-port" master nnd-br up
    ip -n "$ns" addr add "$address/24" dev "nnd-h$i"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "nnd-h$i" up
    cases+="$address) ns=$ns;; "
    echo "$address slots=1"
  done > "$dir/hostfile"
  # `netns-rsh [options] HOST COMMAND…` runs COMMAND, a shell string as ssh runs it, in HOST's
  # namespace. The hosts share this machine's name and /tmp, where real hosts have their own:
  # each gets its own Open MPI session directory, and PMIx keeps its job data in process memory
  # (gds hash) instead of shared-memory segments named after the host, which collided (a "PMIX
  # ERROR … dstore_base.c" and, once in a few runs, a job that printed nothing).
  cat > "$dir/netns-rsh" <<EOF
#!/bin/sh
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
case \$host in $cases*) echo "netns-rsh: unknown host \$host" >&2; exit 255;; esac
mkdir -p "$dir/tmp-\$ns"
exec ip netns exec \$ns env OMPI_MCA_orte_tmpdir_base="$dir/tmp-\$ns" PMIX_MCA_gds=hash sh -c "\$*"
EOF
  chmod +x "$dir/netns-rsh"
  args "$dir"
}

case ${1:-} in
  up) up "${2:?usage: two-hosts.sh up DIR}" ;;
  down) down ;;
  args) args "${2:?usage: two-hosts.sh args DIR}" ;;
  *) echo "usage: scripts/two-hosts.sh up DIR | down | args DIR" >&2; exit 2 ;;
esac
