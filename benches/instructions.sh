#!/bin/bash
# Instructions and mispredicted branches per packet of the packet core,
# counted by cachegrind: exact and repeatable where packet rates drift by
# tens of percent between runs (a shared machine). Compares builds, never
# predicts speed: a cache miss costs no instruction.
#
#   benches/instructions.sh [SCENARIO:SESSIONS ...]   (default: established:1000 reply:1000)
#
# Each scenario runs the dataplane bench's counting mode (LBD_BENCH_COUNT)
# twice, with 0 and REPLAYS (env, default 4) replays of its 64k-packet
# sample, and divides the difference by the packets: set-up cancels out.
set -euo pipefail
cd "$(dirname "$0")/.."
REPLAYS=${REPLAYS:-4}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
BIN=$(cargo bench --bench dataplane --no-run --message-format=json 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "dataplane" and m.get("executable"):
        print(m["executable"])')
# The runner's fixed session-table key: the same buckets in every run.
export LBD_BENCH_HASH_KEY=6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa
counts() { # SCENARIO:SESSIONS REPLAYS -> "instructions mispredicts"
    LBD_BENCH_COUNT="$1:$2" valgrind --tool=cachegrind --cache-sim=no --branch-sim=yes \
        --cachegrind-out-file=/dev/null "$BIN" 2>&1 |
        awk '/I +refs:/ {gsub(",", "", $4); i = $4} /Mispredicts:/ {gsub(",", "", $3); m = $3} END {print i, m}'
}
printf '%-20s %14s %14s\n' scenario instr/packet mispred/packet
for s in "${@:-established:1000 reply:1000}"; do
    for one in $s; do
        read -r i0 m0 < <(counts "$one" 0)
        read -r i1 m1 < <(counts "$one" "$REPLAYS")
        python3 -c "import sys; i0,m0,i1,m1,r=map(int,sys.argv[1:]); n=r*65536; print('%-20s %14.1f %14.2f' % ('$one', (i1-i0)/n, (m1-m0)/n))" \
            "$i0" "$m0" "$i1" "$m1" "$REPLAYS"
    done
done
