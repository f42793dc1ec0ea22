#!/usr/bin/env bash
# The project's test command (README quick start, step 2): formatting, lints and the whole test
# suite. The tests need nothing outside cargo (their S3 server, s3s, runs in-process); CI also
# runs the Tier 2 suite against moto, which scripts/moto.sh installs and starts.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace
fi
