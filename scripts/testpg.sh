#!/usr/bin/env bash
# A PostgreSQL server for ticketd's tests (tests/support/pg.rs creates one
# database per test on it and drops it afterwards). scripts/test.sh calls
# this; it runs on its own too.
#
# Usage: scripts/testpg.sh COMMAND STATE_DIR
#   up STATE_DIR    print the admin URL to export as TICKETD_TEST_PG:
#                   the server on 127.0.0.1:5432 when it answers as user
#                   postgres without a password; otherwise a throw-away
#                   cluster of its own (installing the Debian package
#                   `postgresql` when initdb is missing, as root), initdb'd
#                   in STATE_DIR and started with pg_ctl on a free loopback
#                   port, its socket in STATE_DIR, listen_addresses=127.0.0.1
#   down STATE_DIR  stop that cluster (if `up` started one) and remove
#                   STATE_DIR
#
# Environment:
#   TICKETD_TEST_PG_OWN=1   skip 127.0.0.1:5432 and start an own cluster
#                           (tests this path on a machine that has a server)
#
# initdb refuses to run as root: as root the cluster belongs to the user
# `postgres` (the package creates it), or to a throw-away system user
# `ticketd-pgtest` when there is none. STATE_DIR must be reachable by that
# user (a directory under /tmp, not under /root) and short (the socket path
# is at most 107 bytes).
set -euo pipefail
umask 022

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
INSTALL_LOCK=/var/lock/ticketd-testpg-install.lock

die() { echo "testpg: $*" >&2; exit 1; }
note() { echo "testpg: $*" >&2; }

# --- the existing server ----------------------------------------------------

existing_url() {
  local url=postgres://postgres@127.0.0.1:5432/postgres
  command -v psql >/dev/null 2>&1 || return 1
  # -w: never ask for a password; a server that wants one is not ours to use
  [ "$(PGCONNECT_TIMEOUT=3 psql -X -w -At -d "$url" -c 'SELECT 1' 2>/dev/null)" = 1 ] || return 1
  echo "$url"
}

# --- packages ---------------------------------------------------------------

# The directory with initdb, pg_ctl and postgres: the one on PATH, else the
# newest Debian version directory.
pg_bindir() {
  local d
  if d=$(command -v initdb 2>/dev/null); then
    d=$(dirname "$(readlink -f "$d")")
    [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

apt_install() {
  apt-get -q -y --no-install-recommends \
    -o DPkg::Lock::Timeout=600 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    install "$@" >&2
}

install_postgresql() {
  pg_bindir >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "initdb not found: install the Debian package postgresql (as root), or run '$SELF up DIR' as root"
  command -v apt-get >/dev/null || die "initdb not found and no apt-get: install PostgreSQL by hand"
  exec 9>"$INSTALL_LOCK"
  flock -w 1800 9 || die "timed out waiting for $INSTALL_LOCK"
  if ! pg_bindir >/dev/null; then
    note "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    # Debian's postinst would create and start a system cluster on 5432;
    # the tests use their own. Only when nobody configured it otherwise.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
      mkdir -p /etc/postgresql-common
      echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && apt_install postgresql; then
      :
    else
      note "apt-get install failed or no package lists: apt-get update, then again"
      dpkg --configure -a >&2 || true
      apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || die "apt-get update failed"
      apt_install postgresql || die "apt-get install postgresql failed"
    fi
    pg_bindir >/dev/null || die "still no initdb after installing postgresql"
  fi
  exec 9>&-
}

# --- the own cluster ----------------------------------------------------------

# The user the cluster runs as, and a prefix that runs a command as that user.
cluster_user() {
  if [ "$(id -u)" != 0 ]; then
    id -un
  elif id postgres >/dev/null 2>&1; then
    echo postgres
  else
    id ticketd-pgtest >/dev/null 2>&1 ||
      useradd --system --no-create-home --shell /usr/sbin/nologin ticketd-pgtest >&2 ||
      id ticketd-pgtest >/dev/null 2>&1 || die "cannot create the user ticketd-pgtest"
    echo ticketd-pgtest
  fi
}

as_user() { # USER COMMAND...
  local u=$1
  shift
  if [ "$(id -un)" = "$u" ]; then "$@"; else runuser -u "$u" -- "$@"; fi
}

# with a time limit: a port owned by a process that never accepts would make
# a plain connect hang
port_open() { timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' port_open "$1" 2>/dev/null; }

up() {
  local S=$1 url bin psql user port try
  if [ "${TICKETD_TEST_PG_OWN:-0}" != 1 ] && url=$(existing_url); then
    note "using the server on 127.0.0.1:5432"
    echo existing >"$S/mode"
    echo "$url"
    return 0
  fi
  install_postgresql
  bin=$(pg_bindir)
  psql=$bin/psql
  [ -x "$psql" ] || psql=psql
  user=$(cluster_user)
  chown "$user" "$S" 2>/dev/null || true
  as_user "$user" test -w "$S" || die "$S is not writable by $user (use a directory under /tmp)"
  cd "$S" # runuser keeps the directory, which postgres may not enter (/root)
  as_user "$user" "$bin/initdb" -D "$S/data" -U postgres --auth=trust -E UTF8 --no-locale \
    >"$S/initdb.log" 2>&1 || { cat "$S/initdb.log" >&2; die "initdb failed"; }
  echo "$user" >"$S/user"
  echo "$bin" >"$S/bindir"
  # a free port: another run may take the one found between the check and
  # the start, so a failed start tries the next
  for try in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    port_open "$port" && continue
    # fsync off: a test cluster that crashes is thrown away anyway
    if as_user "$user" "$bin/pg_ctl" -D "$S/data" -l "$S/server.log" -w -t 60 \
      -o "-k $S -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >&2; then
      echo own >"$S/mode"
      url="postgres://postgres@127.0.0.1:$port/postgres"
      [ "$(PGCONNECT_TIMEOUT=5 "$psql" -X -w -At -d "$url" -c 'SELECT 1' 2>/dev/null)" = 1 ] ||
        die "the cluster in $S does not answer on port $port (see $S/server.log)"
      note "own cluster in $S on 127.0.0.1:$port"
      echo "$url"
      return 0
    fi
    tail -5 "$S/server.log" >&2 || true
  done
  die "could not start a cluster in $S (see $S/server.log)"
}

down() {
  local S=$1 user bin
  if [ "$(cat "$S/mode" 2>/dev/null)" = own ] && [ -f "$S/data/postmaster.pid" ]; then
    user=$(cat "$S/user")
    bin=$(cat "$S/bindir")
    cd "$S"
    # immediate: the data goes next, nothing to flush
    as_user "$user" "$bin/pg_ctl" -D "$S/data" -m immediate -w -t 30 stop >&2 ||
      note "pg_ctl stop failed for $S"
  fi
  rm -rf "$S"
}

cmd=${1:-}
[ -n "${2:-}" ] || die "usage: $0 up|down STATE_DIR"
case "$cmd" in
  up)
    mkdir -p "$2"
    up "$(cd "$2" && pwd)"
    ;;
  down)
    [ -d "$2" ] || exit 0
    down "$(cd "$2" && pwd)"
    ;;
  *) die "usage: $0 up|down STATE_DIR" ;;
esac
