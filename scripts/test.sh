#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, unit and
# property tests, the CLI/daemon integration tests, the corpus and the
# malformed-input tests. Needs only the Rust toolchain on a fresh Debian
# machine; the corpus tests read ../shared/corpus (or $TICKETD_CORPUS) and
# say SKIPPED when it is absent.
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
echo "== cargo test"
cargo test --all-targets
