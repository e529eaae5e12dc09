#!/usr/bin/env bash
# Two machines emulated on this one: two network namespaces joined by a veth pair, each end shaped to RATE megabits
# per second (tc tbf), and commands run in them under their own host names (host0, host1; a UTS namespace each).
# What crosses between them goes through a real network interface and the kernel's TCP stack, not loopback.
# Needs root and iproute2 (ip, tc).
#   scripts/hosts.sh up TAG RATE_MBIT   creates the pair; prints host 0's address (host 1's is the next one)
#   scripts/hosts.sh on TAG I CMD...    runs CMD as host I (0 or 1), GLOO_SOCKET_IFNAME set to its interface
#   scripts/hosts.sh down TAG           removes the pair
# TAG: a few letters and digits (at most 8) naming the pair; several pairs may exist at once.
set -euo pipefail
usage() { echo "usage: hosts.sh up TAG RATE_MBIT | on TAG I CMD... | down TAG" >&2; exit 2; }
[ $# -ge 2 ] || usage
verb="$1" tag="$2"
[[ "$tag" =~ ^[a-z0-9]{1,8}$ ]] || { echo "hosts.sh: TAG '$tag' must be 1 to 8 lower-case letters or digits" >&2; exit 2; }
# The pair's subnet, 10.X.Y.0/24, from the tag.
sum=$(printf '%s' "$tag" | cksum | cut -d' ' -f1)
prefix="10.$((sum % 200 + 20)).$(((sum / 200) % 256))"
case "$verb" in
  up)
    [ $# -eq 3 ] && [[ "$3" =~ ^[0-9]+$ ]] && [ "$3" -gt 0 ] || usage
    rate="$3"
    [ "$(id -u)" -eq 0 ] || { echo "hosts.sh: needs root (ip netns, tc)" >&2; exit 2; }
    command -v tc >/dev/null || { echo "hosts.sh: needs iproute2 (ip, tc)" >&2; exit 2; }
    if ip netns list | grep -qE "^${tag}h[01]( |$)"; then
      echo "hosts.sh: a pair named '$tag' is up already (hosts.sh down $tag removes it)" >&2
      exit 2
    fi
    # A step that fails leaves nothing behind.
    trap '"$0" down "$tag"' ERR
    ip netns add "${tag}h0"
    ip netns add "${tag}h1"
    ip link add "${tag}v0" type veth peer name "${tag}v1"
    for i in 0 1; do
      ip link set "${tag}v$i" netns "${tag}h$i"
      ip -n "${tag}h$i" addr add "$prefix.$((i + 1))/24" dev "${tag}v$i"
      ip -n "${tag}h$i" link set lo up
      ip -n "${tag}h$i" link set "${tag}v$i" up
      # Each direction is shaped where it leaves; a burst of 0.2 ms of traffic (at least 16 KiB), so that messages
      # above a few tens of KB already see the rate.
      burst=$((rate * 25 > 16384 ? rate * 25 : 16384))
      ip netns exec "${tag}h$i" tc qdisc add dev "${tag}v$i" root tbf rate "${rate}mbit" burst "$burst" latency 200ms
    done
    echo "$prefix.1"
    ;;
  on)
    [ $# -ge 4 ] && [[ "$3" =~ ^[01]$ ]] || usage
    i="$3"
    shift 3
    exec ip netns exec "${tag}h$i" unshare --uts env GLOO_SOCKET_IFNAME="${tag}v$i" PLANNER_EMULATED_HOST="host$i" \
      sh -c 'hostname "$PLANNER_EMULATED_HOST" && exec "$@"' sh "$@"
    ;;
  down)
    ip netns del "${tag}h0" 2>/dev/null || true
    ip netns del "${tag}h1" 2>/dev/null || true
    ip link del "${tag}v0" 2>/dev/null || true # a pair not yet moved into its namespaces
    ;;
  *) usage ;;
esac
