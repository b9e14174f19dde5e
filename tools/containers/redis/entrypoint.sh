#!/bin/sh
# As the upstream image: arguments that start with `-` are redis-server's, and redis-server
# without a config file listens on every interface with protected mode off (the container's
# network is the boundary; clients never reach it on loopback).
set -e
[ "${1#-}" != "$1" ] && set -- redis-server "$@"
if [ "$1" = redis-server ]; then
  case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac
fi
exec "$@"
