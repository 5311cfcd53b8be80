#!/bin/sh
# Runs one cargo-fuzz target (nightly; the project itself builds on stable).
#   fuzz/run.sh TARGET [SECONDS] [WORKDIR]
# TARGET: dataplane | config | control. SECONDS: default 60.
# WORKDIR (default /tmp/lbd-fuzz/TARGET) gets the growing corpus, the
# crashing inputs (artifacts/) and the log; the committed seeds in
# fuzz/corpus/TARGET are read, never written. Add a crash found to
# fuzz/corpus/TARGET after fixing it: the stable smoke test
# (core/tests/fuzz_smoke.rs) then replays it on every test run.
set -eu
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [WORKDIR]}
seconds=${2:-60}
work=${3:-/tmp/lbd-fuzz/$target}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work/corpus" "$work/artifacts"
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo install cargo-fuzz (and rustup toolchain install nightly)" >&2; exit 1; }
cd "$here"
exec cargo +nightly fuzz run "$target" "$work/corpus" "$here/corpus/$target" -- \
    -max_total_time="$seconds" -artifact_prefix="$work/artifacts/" -print_final_stats=1
