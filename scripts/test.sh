#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, unit and
# property tests, the CLI/daemon integration tests, the corpus and the
# malformed-input tests, and the tests against real Dovecot, Postfix and
# PostgreSQL. Needs the Rust toolchain on a fresh Debian machine; installs
# the mail server and PostgreSQL packages when they are missing (as root)
# and starts the servers on loopback ports in temp directories. PostgreSQL:
# $TICKETD_TEST_PG when set, else the server on 127.0.0.1:5432 when it
# answers as user postgres, else a throw-away cluster (scripts/testpg.sh).
# The corpus tests read ../shared/corpus (or $TICKETD_CORPUS) and say
# SKIPPED when it is absent; the fuzz run (tests/fuzz.rs) takes them as
# seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo not found: install the Rust toolchain (rustup)" >&2
  exit 1
fi
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
# The unit keeps its sandbox (exposure at most 2.5, "OK"), and the
# sysusers/tmpfiles files create what it needs, tried in a scratch root.
if command -v systemd-analyze >/dev/null; then
  echo "== systemd unit"
  systemd-analyze security --offline=yes --threshold=25 systemd/ticketd.service | tail -1
  root=$(mktemp -d)
  mkdir -p "$root/etc"
  systemd-sysusers --root="$root" "$PWD/systemd/ticketd.sysusers"
  systemd-tmpfiles --root="$root" --create "$PWD/systemd/ticketd.tmpfiles"
  grep -q '^ticketd:' "$root/etc/passwd" && [ -d "$root/var/lib/ticketd" ]
  rm -rf "$root"
else
  echo "== systemd unit: SKIPPED (no systemd-analyze)"
fi
# the mail-server tests start a real Dovecot and Postfix: install the
# Debian packages when they are missing (root, ~40 s once; no-op after)
echo "== mail stack packages"
./scripts/mailstack.sh install
# The sample configuration passes the offline check as shipped (README's
# configuration block is the same file; tests/cli.rs checks that too).
echo "== ticketd.example.toml"
sample_data=$(mktemp -d)
cargo run --quiet -- --config ticketd.example.toml --data-dir "$sample_data" check-config
rm -rf "$sample_data"
log="" TICKETD_TEST_LOGS="" pg_state=""
cleanup() {
  [ -z "$pg_state" ] || ./scripts/testpg.sh down "$pg_state" || true
  rm -rf "$log" "$TICKETD_TEST_LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The PostgreSQL tests (tests/support/pg.rs) make a database per test on
# the server TICKETD_TEST_PG names: the one given, or the local one on
# 5432, or a throw-away cluster on a free port that `cleanup` stops and
# removes (under /tmp: the cluster's user must reach it).
echo "== PostgreSQL"
if [ -n "${TICKETD_TEST_PG:-}" ]; then
  echo "TICKETD_TEST_PG given"
else
  pg_state=$(mktemp -d /tmp/ticketd-pg.XXXXXX)
  TICKETD_TEST_PG=$(./scripts/testpg.sh up "$pg_state")
  echo "TICKETD_TEST_PG=$TICKETD_TEST_PG"
fi
export TICKETD_TEST_PG
echo "== cargo test"
log=$(mktemp)
# Tests that run ticketd with secrets (client secrets, tokens, passwords,
# private keys: each carries the marker "tdsecret" or is PEM) keep its logs
# and outputs here (tests/support/kept_logs.rs); no line of any may hold one.
TICKETD_TEST_LOGS=$(mktemp -d)
export TICKETD_TEST_LOGS
set +e
# tests/fuzz.rs mutates the corpus and fixtures for a bounded time (20 s by
# default); here it gets 150 s of the debug build that is built anyway. A
# failure prints TICKETD_FUZZ_SEED=… to repeat it.
TICKETD_FUZZ_SECS="${TICKETD_FUZZ_SECS:-150}" cargo test --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo's own last line is that of
# the last target, often a bench with no tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
echo "== secrets in logs"
kept=$(find "$TICKETD_TEST_LOGS" -type f | wc -l)
if [ "$kept" -eq 0 ]; then
  echo "no log was kept: the check would check nothing (TICKETD_TEST_LOGS not honoured?)" >&2
  status=1
elif leaks=$(grep -lE 'tdsecret|-----BEGIN [A-Z ]*PRIVATE KEY-----' -r "$TICKETD_TEST_LOGS" "$log"); then
  echo "a configured secret is in these logs (the lines are not shown here):" >&2
  echo "$leaks" | sed 's/^/  /' >&2
  status=1
else
  echo "none in $kept kept logs and outputs, nor in the test output"
fi
exit "$status"
