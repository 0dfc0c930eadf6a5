#!/usr/bin/env bash
# An instruction profile of the writer for one `audit-bench ingest` phase:
#
#   scripts/profile-writer.sh                          # 6000 RecordEvent calls
#   scripts/profile-writer.sh --phases unary --signals 6000
#
# Builds the writer and audit-bench with the `profiling` cargo profile
# (release code with symbols), starts a throw-away primary + replica
# (scripts/bench-lib.sh) and runs `audit-bench ingest` with the writer
# under `valgrind --tool=callgrind`. Callgrind counts instructions, not
# seconds, so the profile is the same on a busy machine as on a quiet one;
# the phase's rates under valgrind mean nothing. Prints the instructions per
# item and their split by where they run (allocator, gRPC/HTTP/2 stack,
# diesel and the PostgreSQL client, JSON ...); the raw profile stays in
# PROFILE_DIR (default target/profile-writer) for callgrind_annotate.
#
# audit-bench kills its writer child with SIGKILL when the phase ends, which
# would lose the profile: the writer runs under valgrind as a grandchild and
# is stopped here with SIGTERM, so callgrind writes its file on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PRIMARY_PORT=${BENCH_PRIMARY_PORT:-17732}
REPLICA_PORT=${BENCH_REPLICA_PORT:-17733}
OUT=${PROFILE_DIR:-$ROOT/target/profile-writer}
command -v valgrind >/dev/null || { echo "profile-writer: valgrind is not installed" >&2; exit 1; }
[[ $# -gt 0 ]] || set -- --phases events --signals 6000

cargo build --profile profiling -p audit-writer -p audit-bench
BIN=$ROOT/target/profiling
mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out.* "$OUT/valgrind.pid"

source scripts/bench-lib.sh
bench_cluster_start audit-profile "$PRIMARY_PORT" "$REPLICA_PORT"
URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench
bench_database "$PRIMARY_PORT" bench "$BIN/audit-writer"

WRAPPER=$OUT/writer-under-callgrind.sh
cat >"$WRAPPER" <<WRAP
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" "$BIN/audit-writer" "\$@" &
echo \$! >"$OUT/valgrind.pid"
wait
WRAP
chmod +x "$WRAPPER"

"$BIN/audit-bench" ingest --database-url "$URL" --writer-bin "$WRAPPER" \
    --startup-timeout-secs 300 --call-timeout-secs 300 "$@" | tee "$OUT/ingest.txt"
pid=$(cat "$OUT/valgrind.pid")
kill -TERM "$pid" 2>/dev/null || true
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done

items=$(awk '$2 ~ /^[0-9]+$/ && $1 != "phase" { n += $2 } END { print n + 0 }' "$OUT/ingest.txt")
callgrind_annotate --inclusive=no --auto=no --threshold=100 "$OUT/callgrind.out.$pid" |
    python3 -c '
import collections, re, sys
items = int(sys.argv[1])
rules = [
    ("allocator (malloc, free, realloc)", r"malloc|__rdl_|arena\.c"),
    ("memcpy, memmove, memcmp", r"mem(move|cpy|set|cmp)"),
    ("gRPC and HTTP/2 (tonic, hyper, h2, tower, http, bytes)", r"/(h2|hyper|hyper-util|tonic|tower|axum|http|http-body|http-body-util|bytes)-\d"),
    ("protobuf (prost)", r"/prost-\d|audit_proto"),
    ("diesel and the PostgreSQL client", r"diesel|postgres"),
    ("JSON (serde_json)", r"serde_json|serde_core"),
    ("tracing and metrics", r"tracing|opentelemetry|metrics|quanta"),
    ("hashing", r"sip\.rs|hash"),
    ("tokio", r"/tokio-\d"),
]
split, total = collections.Counter(), 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    n = int(m.group(1).replace(",", ""))
    total += n
    split[next((name for name, rx in rules if re.search(rx, m.group(2))), "the rest (std, the project, ...)")] += n
print(f"writer instructions: {total / 1e6:.1f} M in all, {total / max(items, 1) / 1e3:.1f} k per item ({items} items, start-up and periodic jobs included)")
for name, n in split.most_common():
    print(f"  {100 * n / total:5.1f} %  {name}")
' "$items"
echo "profile: $OUT/callgrind.out.$pid (callgrind_annotate --inclusive=yes $OUT/callgrind.out.$pid)"
