#!/usr/bin/env bash
# Stop a private Docker engine started by hack/docker-up.sh.
#
#   hack/docker-down.sh [NAME] [--purge]     # NAME defaults to "cara"
#
# dockerd gets SIGTERM, which stops its containers (each with its own stop
# timeout) and its managed containerd. Only if it is still alive after
# CARA_DOCKER_DOWN_TIMEOUT seconds (default 60) is it killed. Whatever a killed
# or crashed daemon leaves behind (shims, container processes, mounts) is then
# cleaned up, touching only what belongs to this NAME. Its bridges and iptables
# chain go too, so a stopped NAME leaves no routes or rules behind; images,
# containers and networks stay in the data root for the next docker-up.
#
# --purge also deletes the data root and the remembered choices (subnet,
# storage driver): the next docker-up starts cold.
set -euo pipefail

name=cara
purge=0
for arg in "$@"; do
  case $arg in
    --purge) purge=1 ;;
    -h | --help) sed -n '/^set -euo/q;2,$s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "docker-down: unknown option $arg" >&2; exit 2 ;;
    *) name=$arg ;;
  esac
done
if [[ ! $name =~ ^[a-z0-9][a-z0-9_-]{0,31}$ ]]; then
  echo "docker-down: bad NAME '$name'" >&2
  exit 2
fi

# Same layout as docker-up.sh.
state_root=/var/lib/cara-docker
run_root=/var/run/cara-docker
data_root=$state_root/$name
exec_root=$run_root/$name
sock=$run_root/$name.sock
pidfile=$run_root/$name.pid
log=/var/log/cara-docker-$name.log
conf=$state_root/$name.conf
daemon_json=$state_root/$name.daemon.json
bridge=cara-br-$name
if ((${#bridge} > 15)); then
  bridge=cara-br-$(printf '%s' "$name" | sha256sum | cut -c1-7)
fi
chain=CARA-${bridge#cara-br-}
timeout_s=${CARA_DOCKER_DOWN_TIMEOUT:-60}

say() { echo "docker-down[$name]: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root"

# A zombie counts as gone (see docker-up.sh: PID 1 here may never reap).
alive() {
  [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Waits up to $2 seconds for pid $1 to go away.
wait_gone() {
  local deadline=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# Mount points at or below $1, deepest first. mountinfo has resolved paths
# (/run, not /var/run).
mounts_under() {
  awk -v p="$(realpath -m "$1")" '$5 == p || index($5, p "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2-
}

# Don't race a docker-up of the same NAME.
mkdir -p "$state_root"
exec 9>"$state_root/.$name.lock"
flock -w 120 9 || die "timed out waiting for a docker-up/down of $name"

pid=$(cat "$pidfile" 2>/dev/null || true)
if alive "$pid"; then
  say "stopping dockerd pid $pid (SIGTERM, up to ${timeout_s}s)"
  start=$SECONDS
  kill -TERM "$pid"
  if wait_gone "$pid" "$timeout_s"; then
    say "dockerd stopped in $((SECONDS - start))s"
  else
    say "dockerd still alive after ${timeout_s}s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "dockerd pid $pid survived SIGKILL"
  fi
else
  say "dockerd is not running"
fi

# After a clean stop nothing below is left. After a kill or a crash, the
# containers' shims and processes outlive dockerd (its containerd dies with it).
# They are found by what is unique to this NAME: the containerd namespace in
# the shims' arguments and the cgroup parent /cara-NAME of the containers.
ctd_pid=$(cat "$exec_root/containerd/containerd.pid" 2>/dev/null || true)
if alive "$ctd_pid"; then
  say "killing leftover containerd pid $ctd_pid"
  kill -KILL "$ctd_pid" 2>/dev/null || true
fi
for cmdline in /proc/[0-9]*/cmdline; do
  args=$(tr '\0' ' ' 2>/dev/null <"$cmdline" || true)
  if [[ $args == *containerd-shim*" -namespace cara-$name "* ]]; then
    shim=${cmdline#/proc/}
    shim=${shim%/cmdline}
    say "killing leftover shim pid $shim"
    kill -KILL "$shim" 2>/dev/null || true
  fi
done
mapfile -t cgroups < <(find /sys/fs/cgroup -maxdepth 3 -type d -name "cara-$name" 2>/dev/null)
if ((${#cgroups[@]})); then
  mapfile -t procs < <(find "${cgroups[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un)
  if ((${#procs[@]})); then
    say "killing ${#procs[@]} leftover container process(es)"
    kill -KILL "${procs[@]}" 2>/dev/null || true
    for p in "${procs[@]}"; do wait_gone "$p" 10 || say "pid $p survived SIGKILL"; done
  fi
  # Empty cgroup directories can only be removed with rmdir, leaves first.
  find "${cgroups[@]}" -depth -type d -exec rmdir {} + 2>/dev/null || true
fi
for m in $(mounts_under "$exec_root") $(mounts_under "$data_root"); do
  if umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; then
    say "unmounted leftover $m"
  else
    say "could not unmount $m"
  fi
done

# Bridges: ours, plus those of user-defined networks, which all live in this
# NAME's 10.X.0.0/16 (see docker-up.sh). Deleting a bridge drops its routes;
# dockerd recreates the bridges of its networks when it starts again.
x=
if [[ -s $conf ]]; then
  x=$(sed -n 's/^CARA_SUBNET_INDEX=//p' "$conf")
fi
if ip link del "$bridge" 2>/dev/null; then say "removed bridge $bridge"; fi
if [[ -n $x ]]; then
  while read -r _ dev _ cidr _; do
    if [[ $cidr == 10.$x.* ]] && [[ -d /sys/class/net/$dev/bridge ]]; then
      ip link del "$dev" && say "removed bridge $dev ($cidr)"
    fi
  done <<<"$(ip -4 -o addr show)"
fi

# The chain docker-up installs (CARA_DOCKER_IPTABLES=own), in whichever
# backend it went to.
for ipt in iptables iptables-legacy; do
  command -v "$ipt" >/dev/null || continue
  for hook in filter:FORWARD nat:POSTROUTING; do
    table=${hook%%:*}
    while "$ipt" -w 5 -t "$table" -D "${hook#*:}" -j "$chain" 2>/dev/null; do :; done
    if "$ipt" -w 5 -t "$table" -F "$chain" 2>/dev/null; then
      "$ipt" -w 5 -t "$table" -X "$chain" && say "removed $ipt $table chain $chain"
    fi
  done
done

rm -f "$sock" "$pidfile"

if ((purge)); then
  if [[ -n $(mounts_under "$data_root") ]]; then
    die "mounts remain under $data_root; not purging"
  fi
  rm -rf "$data_root" "$exec_root" "$conf" "$daemon_json" "$state_root/.$name.lock"
  say "purged $data_root"
fi
say "done (log kept at $log)"
