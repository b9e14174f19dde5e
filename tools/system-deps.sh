#!/usr/bin/env bash
# The machine's own packages Parley's `make run` and `make test` need, from Debian's packages:
# installed with apt when missing and running as root, otherwise named with the command to run.
#   tools/system-deps.sh run    RabbitMQ, Redis, Java 17 and Maven (Cassandra's jars come with Maven)
#   tools/system-deps.sh test   the same, Chromium for the browser tests, and the container tools
#   tools/system-deps.sh containers  podman (with runc, netavark, aardvark-dns for names between
#                               pods, iptables for published ports) and debootstrap, for
#                               `make image`, `make test-containers` and `make k8s-play`
set -euo pipefail
want=(rabbitmq-server:rabbitmq-server redis-server:redis-server java:openjdk-17-jre-headless mvn:maven)
containers=(podman:podman runc:runc debootstrap:debootstrap /usr/lib/podman/netavark:netavark
  /usr/lib/podman/aardvark-dns:aardvark-dns iptables:iptables)
case "${1:-run}" in
  test) want+=(chromium:chromium "${containers[@]}") ;;
  containers) want=("${containers[@]}") ;;
esac

missing=()
for pair in "${want[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null 2>&1 \
    || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian's ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The servers are started and stopped by Parley's own tooling, never at install time.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
fi
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
