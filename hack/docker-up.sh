#!/usr/bin/env bash
# Start (or find) a private Docker engine for Caravanserai's tests.
#
#   eval "$(hack/docker-up.sh [NAME])"      # NAME defaults to "cara"
#
# Machines of this project have no Docker engine running and may have no
# Docker at all, so this installs Debian's docker.io when dockerd is missing and
# starts a dockerd of its own. Everything about that daemon is private to NAME
# (data root, exec root, socket, pidfile, bridge, address pools, containerd
# namespaces), so several can run side by side on one host, e.g. one per
# simulated node in the e2e tests.
#
# The only thing written to stdout is the final line
#   export DOCKER_HOST=unix:///var/run/cara-docker/NAME.sock
# Progress and errors go to stderr. Re-running it while the daemon answers just
# prints that line again.
#
# Knobs (environment):
#   CARA_DOCKER_UP_TIMEOUT   seconds to wait for the daemon to answer (60)
#   CARA_DOCKER_STORAGE_DRIVER  storage driver for this run (default: the one
#                            picked on NAME's first start and remembered:
#                            overlay2 if the kernel can mount it over the data
#                            root, else vfs)
#   CARA_DOCKER_IPTABLES     own (default): dockerd --iptables=false plus one
#                            chain of rules per NAME (see install_own_rules);
#                            docker: dockerd manages iptables (one daemon only);
#                            none: no rules at all
#
# Stop it with hack/docker-down.sh [NAME].
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '/^set -euo/q;2,$s/^# \{0,1\}//p' "$0"
  exit 0
fi
name=${1:-cara}
if [[ ! $name =~ ^[a-z0-9][a-z0-9_-]{0,31}$ ]]; then
  echo "docker-up: bad NAME '$name' (want [a-z0-9][a-z0-9_-]*, at most 32 chars)" >&2
  exit 2
fi

state_root=/var/lib/cara-docker
run_root=/var/run/cara-docker
data_root=$state_root/$name
exec_root=$run_root/$name
sock=$run_root/$name.sock
pidfile=$run_root/$name.pid
log=/var/log/cara-docker-$name.log
conf=$state_root/$name.conf          # choices that must stay stable across restarts
daemon_json=$state_root/$name.daemon.json
host=unix://$sock
timeout_s=${CARA_DOCKER_UP_TIMEOUT:-60}

# Linux caps interface names at 15 characters; long NAMEs get a hashed suffix.
bridge=cara-br-$name
if ((${#bridge} > 15)); then
  bridge=cara-br-$(printf '%s' "$name" | sha256sum | cut -c1-7)
fi

say() { echo "docker-up[$name]: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (dockerd, bridges and mounts need it)"

# A short, bounded probe: a wedged daemon must not hang the caller.
answers() {
  timeout 10 docker -H "$host" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

print_export() { echo "export DOCKER_HOST=$host"; }

# Waits until the daemon answers; returns 1 if pid $1 dies, 2 on timeout.
wait_answer() {
  local deadline=$((SECONDS + timeout_s))
  until answers; do
    alive "$1" || return 1
    ((SECONDS < deadline)) || return 2
    sleep 0.2
  done
}

# kill -0 is not enough: a dead child stays a zombie until reaped, and the
# PID 1 of some sandboxes never reaps orphans. A zombie counts as gone.
alive() {
  [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# --- install ----------------------------------------------------------------

apt_install() {
  # Debian's maintainer scripts would start the distro's own dockerd on the
  # shared /var/run/docker.sock; a policy-rc.d that denies everything stops
  # that (containers built from Debian images often already ship one).
  local added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  local rc=0
  {
    export DEBIAN_FRONTEND=noninteractive
    # Try the existing package lists first; refresh them only if that fails.
    apt-get install -y -q --no-install-recommends "$@" ||
      { apt-get update -q && apt-get install -y -q --no-install-recommends "$@"; }
  } >&2 || rc=$?
  ((added_policy)) && rm -f /usr/sbin/policy-rc.d
  return $rc
}

ensure_installed() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)   # brings containerd, runc, tini
  command -v iptables >/dev/null || need+=(iptables)
  command -v ip >/dev/null || need+=(iproute2)
  command -v flock >/dev/null || need+=(util-linux)
  if ((${#need[@]})); then
    say "installing ${need[*]} (apt)"
    apt_install "${need[@]}" || die "apt-get install ${need[*]} failed"
  fi
  command -v docker >/dev/null || die "no docker client on PATH (docker.io should have installed one)"
}

# --- one-time choices, remembered in $conf -----------------------------------

# Each NAME owns 10.X.0.0/16: the default bridge is 10.X.0.1/24 and user-defined
# networks come from 10.X.128.0/17. Without distinct pools every daemon would
# hand out 172.18.0.0/16 to its first network and the host's routes would clash.
# X starts from a hash of NAME and skips ones taken by another NAME or by any
# route already on the host.
choose_subnet() {
  local h x i taken
  h=$(printf '%s' "$name" | cksum | cut -d' ' -f1)
  for ((i = 0; i < 64; i++)); do
    x=$((160 + (h + i) % 64))
    taken=0
    if grep -qsx "CARA_SUBNET_INDEX=$x" "$state_root"/*.conf; then taken=1; fi
    if grep -q "^10\.$x\." <<<"$(ip -4 route show)"; then taken=1; fi
    if ((!taken)); then echo "$x"; return 0; fi
  done
  die "no free 10.X.0.0/16 in 10.160-223 for the daemon's networks"
}

overlay_works() {
  # overlay2 needs overlayfs mountable on top of the data root's filesystem
  # (it is not when the data root itself sits on overlayfs, as in many
  # containers); vfs always works but copies whole layers.
  local d rc=1
  d=$(mktemp -d "$state_root/.overlay-probe.XXXXXX")
  mkdir "$d/l" "$d/u" "$d/w" "$d/m"
  if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
    umount "$d/m" && rc=0
  fi
  rm -rf "$d"
  return $rc
}

load_or_make_conf() {
  mkdir -p "$state_root" "$run_root"
  # Serialise allocation between concurrent docker-up runs for different NAMEs.
  exec 8>"$state_root/.alloc.lock"
  flock -w 60 8 || die "timed out waiting for $state_root/.alloc.lock"
  if [[ ! -s $conf ]]; then
    local x driver
    x=$(choose_subnet)
    if overlay_works; then driver=overlay2; else driver=vfs; fi
    printf 'CARA_SUBNET_INDEX=%s\nCARA_STORAGE_DRIVER=%s\n' "$x" "$driver" >"$conf.tmp"
    mv "$conf.tmp" "$conf"
    say "allocated 10.$x.0.0/16, storage driver $driver"
  fi
  exec 8>&-
  # shellcheck disable=SC1090
  source "$conf"
  # An explicit override wins over the remembered choice, for this run only.
  CARA_STORAGE_DRIVER=${CARA_DOCKER_STORAGE_DRIVER:-$CARA_STORAGE_DRIVER}
}

# --- networking ---------------------------------------------------------------

# Prints the iptables that works here: the nft-backed `iptables` first, then
# iptables-legacy (old kernels without nf_tables); nothing if neither does.
# Creating and deleting a chain in nat and filter is what is needed of it.
pick_iptables() {
  local bin t ok chain=CARA-PROBE-$$
  for bin in iptables iptables-legacy; do
    command -v "$bin" >/dev/null || continue
    ok=1
    for t in nat filter; do
      if ! { "$bin" -w 5 -t "$t" -N "$chain" && "$bin" -w 5 -t "$t" -X "$chain"; } >/dev/null 2>&1; then
        ok=0
        break
      fi
    done
    if ((ok)); then echo "$bin"; return 0; fi
  done
  return 0
}

# Why dockerd runs with --iptables=false by default: every dockerd manages the
# same host-wide chains (DOCKER, DOCKER-ISOLATION-STAGE-1/2, the jumps in
# FORWARD). A starting daemon flushes the others' rules, and two daemons
# creating networks at the same moment fail with "unable to remove jump to
# DOCKER-ISOLATION-STAGE-1 rule in FORWARD chain" (seen here with two daemons).
# Instead each NAME gets one chain of its own in filter and nat, covering its
# 10.X.0.0/16: forwarded traffic from and to it is accepted even when FORWARD's
# policy is DROP (which any dockerd with iptables on sets; bridged traffic also
# passes FORWARD, via br_netfilter), and traffic leaving for elsewhere is
# masqueraded. Published ports are then served by docker-proxy (the userland
# proxy), which needs no rules. What is lost: isolation between networks of one
# daemon, and the client's source address as seen by a published service.
install_own_rules() {
  local ipt=$1 subnet=$2 chain=$3
  "$ipt" -w 5 -t filter -N "$chain" 2>/dev/null || "$ipt" -w 5 -t filter -F "$chain"
  "$ipt" -w 5 -t filter -A "$chain" -s "$subnet" -j ACCEPT
  "$ipt" -w 5 -t filter -A "$chain" -d "$subnet" -j ACCEPT
  "$ipt" -w 5 -t filter -C FORWARD -j "$chain" 2>/dev/null ||
    "$ipt" -w 5 -t filter -I FORWARD 1 -j "$chain"
  "$ipt" -w 5 -t nat -N "$chain" 2>/dev/null || "$ipt" -w 5 -t nat -F "$chain"
  "$ipt" -w 5 -t nat -A "$chain" -s "$subnet" ! -d "$subnet" -j MASQUERADE
  "$ipt" -w 5 -t nat -C POSTROUTING -j "$chain" 2>/dev/null ||
    "$ipt" -w 5 -t nat -I POSTROUTING 1 -j "$chain"
}

ensure_bridge() {
  local cidr=$1
  ip link show "$bridge" >/dev/null 2>&1 || ip link add name "$bridge" type bridge
  if ! grep -qwF "$cidr" <<<"$(ip -4 -o addr show dev "$bridge")"; then
    ip addr flush dev "$bridge"
    ip addr add "$cidr" dev "$bridge"
  fi
  ip link set "$bridge" up
}

# --- main ---------------------------------------------------------------------

mkdir -p "$state_root" "$run_root"

# One docker-up per NAME at a time; a second caller waits, then finds the
# daemon running. (The lock fd is closed for dockerd, which outlives us.)
exec 9>"$state_root/.$name.lock"
flock -w $((timeout_s + 30)) 9 || die "timed out waiting for another docker-up $name"

if command -v docker >/dev/null && answers; then
  print_export
  exit 0
fi

ensure_installed
load_or_make_conf

# A daemon of this NAME that runs but does not answer may still be starting
# (restoring containers, or left by a docker-up that was killed): give it the
# same time as a fresh start, but never start a second one on its data root.
old_pid=$(cat "$pidfile" 2>/dev/null || true)
if alive "$old_pid"; then
  say "dockerd pid $old_pid runs but does not answer yet; waiting up to ${timeout_s}s"
  if wait_answer "$old_pid"; then
    print_export
    exit 0
  fi
  alive "$old_pid" &&
    die "dockerd pid $old_pid does not answer on $host; see $log, or restart it with hack/docker-down.sh $name"
fi
rm -f "$pidfile" "$sock"

x=$CARA_SUBNET_INDEX
subnet=10.$x.0.0/16
ensure_bridge "10.$x.0.1/24"

mkdir -p "$data_root" "$exec_root"

# dockerd runs `iptables` from its PATH even with --iptables=false: the
# embedded DNS of user-defined networks redirects 127.0.0.11:53 inside each
# container with it. If only the legacy backend works, a private PATH entry
# points there instead of changing the host's alternatives.
rm -rf "${exec_root:?}/bin"
ipt=$(pick_iptables)
if [[ $ipt == iptables-legacy ]]; then
  mkdir -p "$exec_root/bin"
  ln -s "$(command -v iptables-legacy)" "$exec_root/bin/iptables"
  ln -s "$(command -v ip6tables-legacy)" "$exec_root/bin/ip6tables"
  say "iptables (nft) unusable, using iptables-legacy"
fi

iptables_mode=${CARA_DOCKER_IPTABLES:-own}
case $iptables_mode in
  own)
    dockerd_iptables=false
    if [[ -n $ipt ]]; then
      install_own_rules "$ipt" "$subnet" "CARA-${bridge#cara-br-}"
    else
      say "WARNING: no working iptables: no NAT, and container DNS on user networks will fail"
    fi
    ;;
  docker)
    [[ -n $ipt ]] || die "CARA_DOCKER_IPTABLES=docker but no iptables works here"
    dockerd_iptables=true
    say "dockerd manages iptables itself: fine alone, racy next to other daemons"
    ;;
  none) dockerd_iptables=false ;;
  *) die "CARA_DOCKER_IPTABLES must be own, docker or none" ;;
esac

# Our own (empty) daemon.json, so a host /etc/docker/daemon.json cannot add
# conflicting settings (data-root, bridge, ...) to a private daemon.
[[ -s $daemon_json ]] || echo '{}' >"$daemon_json"

args=(
  --host "$host"
  --data-root "$data_root"
  --exec-root "$exec_root"
  --pidfile "$pidfile"
  --config-file "$daemon_json"
  --storage-driver "$CARA_STORAGE_DRIVER"
  --bridge "$bridge"
  --default-address-pool "base=10.$x.128.0/17,size=24"
  --iptables="$dockerd_iptables"
  # Containers' cgroups under /cara-NAME rather than the shared /docker, so
  # docker-down can find (and, after a crash, kill) exactly this daemon's
  # containers. cgroupfs works on cgroup v1 and v2, with or without systemd.
  --exec-opt native.cgroupdriver=cgroupfs
  --cgroup-parent "/cara-$name"
  # dockerd starts its own containerd under exec-root/data-root, but would use
  # a host containerd at /run/containerd/containerd.sock instead if one runs;
  # separate namespaces keep daemons apart in that case too.
  --containerd-namespace "cara-$name"
  --containerd-plugins-namespace "cara-$name-plugins"
)

{
  echo
  echo "=== $(date -Is) docker-up $name: dockerd ${args[*]}"
} >>"$log"

say "starting dockerd (storage $CARA_STORAGE_DRIVER, iptables $iptables_mode, bridge $bridge 10.$x.0.1/24); log $log"
start=$SECONDS
# setsid: the daemon must survive the caller's process group being killed
# (test runners, CI steps). 8/9 are our lock fds: dockerd must not hold them.
PATH="$exec_root/bin:$PATH" setsid dockerd "${args[@]}" </dev/null >>"$log" 2>&1 8>&- 9>&- &
pid=$!

# On failure, show why, then let docker-down take away what this run set up
# (bridge, rules, a half-started daemon) so the next attempt starts clean.
fail_start() {
  say "$1; last lines of $log:"
  tail -n 30 "$log" >&2
  # The pidfile may not exist yet, so docker-down could not find this one.
  if alive "$pid"; then
    kill -TERM "$pid"
    local t=$((SECONDS + 10))
    while alive "$pid" && ((SECONDS < t)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  exec 9>&- # docker-down takes the same lock
  CARA_DOCKER_DOWN_TIMEOUT=10 "$here/docker-down.sh" "$name" || true
  exit 1
}

rc=0
wait_answer "$pid" || rc=$?
((rc != 1)) || fail_start "dockerd exited during startup"
((rc != 2)) || fail_start "dockerd did not answer on $host within ${timeout_s}s"

say "up in $((SECONDS - start))s (pid $pid)"
print_export
