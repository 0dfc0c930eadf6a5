#!/usr/bin/env bash
# Runs the README's grpcurl examples against a running stack and checks the
# answers, so the documented commands cannot silently rot.
#
#   scripts/grpcurl-examples.sh WRITER_ADDR READER_ADDR
#   scripts/grpcurl-examples.sh 127.0.0.1:15051 127.0.0.1:15052
#
# Every command is printed (in copy-paste form) before it runs; the first
# failing check prints the answer it got and exits non-zero.
#
# Against a secure stack (`AUDIT_STACK_SECURE=1 scripts/stack.sh up`, then
# `source STACK_DIR/env`): with AUDIT_GRPC_CACERT set every call goes over
# TLS trusting that CA, and with AUDIT_WRITER_TOKEN / AUDIT_READER_TOKEN set
# calls to the writer / reader services carry that bearer token (health and
# reflection need none); calls without a token or with the wrong one are
# then checked to be refused.
#
# grpcurl prints answers as protobuf JSON: lowerCamelCase field names,
# enums by name, int64 as strings, and fields with default values (false,
# 0, "") left out. The checks below accept snake_case names too.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: scripts/grpcurl-examples.sh WRITER_ADDR READER_ADDR" >&2
    exit 2
fi
WRITER=$1
READER=$2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py_scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
PATH=$ROOT/.tools/bin:$PATH${py_scripts:+:$py_scripts}:$HOME/.local/bin
command -v grpcurl >/dev/null || {
    echo "grpcurl-examples: grpcurl is not on PATH (scripts/install-deps.sh installs it)" >&2
    exit 1
}

CHECKS=0
OUT=""

# Transport: plaintext, or TLS trusting the secure stack's CA.
if [[ -n ${AUDIT_GRPC_CACERT:-} ]]; then
    TRANSPORT=(-cacert "$AUDIT_GRPC_CACERT")
    SHOWN_TRANSPORT='-cacert $AUDIT_GRPC_CACERT'
else
    TRANSPORT=(-plaintext)
    SHOWN_TRANSPORT=-plaintext
fi

# The token a call needs, by the service it calls (shown by variable name:
# tokens are never printed).
token_for() {
    local a
    for a in "$@"; do
        case $a in
        signal_audit.v1.SignalWriterService/*) echo AUDIT_WRITER_TOKEN ;;
        signal_audit.v1.SignalReaderService/* | signal_audit.v1.SignalAnalyticsService/*) echo AUDIT_READER_TOKEN ;;
        esac
    done
}

fail() {
    printf '\ngrpcurl-examples: FAILED: %s\n' "$1" >&2
    if [[ -n $OUT ]]; then
        printf -- '--- answer ---\n%s\n--------------\n' "$OUT" >&2
    fi
    exit 1
}

# grpcurl ARGS... : prints the command, runs it (15 s deadline), keeps its
# output in OUT; a non-zero exit is a failure.
call() {
    local shown=() a
    for a in "$@"; do
        # Quote arguments the way a reader would type them.
        if [[ $a =~ [^A-Za-z0-9_./:=-] ]]; then shown+=("'$a'"); else shown+=("$a"); fi
    done
    local auth=() var
    var=$(token_for "$@")
    if [[ -n $var && -n ${!var:-} ]]; then
        auth=(-H "authorization: Bearer ${!var}")
        shown=(-H "'authorization: Bearer \$$var'" "${shown[@]}")
    fi
    printf '\n$ grpcurl %s %s\n' "$SHOWN_TRANSPORT" "${shown[*]}" >&2
    if ! OUT=$(grpcurl "${TRANSPORT[@]}" "${auth[@]}" -max-time 15 "$@" 2>&1); then
        fail "grpcurl exited non-zero"
    fi
    sed -n '1,60p' <<<"$OUT" >&2
}

# expect_text NEEDLE... : every needle occurs in the last answer.
expect_text() {
    local needle
    for needle in "$@"; do
        grep -qF -- "$needle" <<<"$OUT" || fail "expected '$needle' in the answer"
        CHECKS=$((CHECKS + 1))
    done
}

# expect_json PYTHON : runs PYTHON with the last answer parsed as `doc`,
# helpers g(obj, "snake_name") and need(condition, message); whatever it
# prints is left in RESULT.
RESULT=""
expect_json() {
    local code=$1 result
    if ! result=$(
        python3 -c '
import json, re, sys

def g(obj, snake, default=None):
    """Field by proto name, as grpcurl (camelCase) or snake_case."""
    parts = snake.split("_")
    camel = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    if isinstance(obj, dict):
        for key in (camel, snake):
            if key in obj:
                return obj[key]
    return default

def need(cond, msg):
    if not cond:
        sys.exit("check failed: " + msg)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LSN = re.compile(r"^[0-9A-Fa-f]+/[0-9A-Fa-f]+$")
try:
    doc = json.loads(sys.stdin.read())
except ValueError as e:
    sys.exit("answer is not JSON: %s" % e)
'"$code" <<<"$OUT" 2>&1
    ); then
        fail "${result:-json check failed}"
    fi
    CHECKS=$((CHECKS + 1))
    RESULT=$result
}

new_uuid() {
    cat /proc/sys/kernel/random/uuid 2>/dev/null || python3 -c 'import uuid; print(uuid.uuid4())'
}

echo "grpcurl-examples: writer $WRITER, reader $READER" >&2

# --- discovery (server reflection) and health --------------------------------
call "$WRITER" list
expect_text signal_audit.v1.SignalWriterService grpc.health.v1.Health
call "$READER" list
expect_text signal_audit.v1.SignalReaderService grpc.health.v1.Health

call "$WRITER" describe signal_audit.v1.SignalWriterService
expect_text "rpc RecordSignal" "rpc RecordEvent" "rpc RecordBatch"
call "$READER" describe signal_audit.v1.SignalReaderService
expect_text "rpc GetSignal" "rpc ListSignals" "rpc ListEvents"

call "$WRITER" grpc.health.v1.Health/Check
expect_text '"status": "SERVING"'
call "$READER" grpc.health.v1.Health/Check
expect_text '"status": "SERVING"'
# Per service: SERVING only while the service's database answers.
call -d '{"service":"signal_audit.v1.SignalWriterService"}' "$WRITER" grpc.health.v1.Health/Check
expect_text '"status": "SERVING"'
call -d '{"service":"signal_audit.v1.SignalReaderService"}' "$READER" grpc.health.v1.Health/Check
expect_text '"status": "SERVING"'

# --- write a signal ------------------------------------------------------------
call -d '{"signal":{"ticker":"NASDAQ:AAPL","side":"buy","action":"open","price":187.25,"original_signal_json":"{\"raw\":\"buy AAPL\"}"}}' \
    "$WRITER" signal_audit.v1.SignalWriterService/RecordSignal
expect_json '
s = g(doc, "signal", {})
need(g(doc, "created") is True, "created should be true for a new signal")
need(UUID.match(g(s, "signal_id", "")), "signal_id should be a UUID")
need(g(s, "ticker") == "NASDAQ:AAPL", "ticker should be kept as sent")
need(g(s, "normalised_ticker") == "AAPL", "normalised_ticker should be AAPL")
need(g(s, "side") == "buy" and g(s, "action") == "open", "side/action should be kept")
need(abs(float(g(s, "price", 0)) - 187.25) < 1e-9, "price should be 187.25")
need(json.loads(g(s, "original_signal_json", "null")) == {"raw": "buy AAPL"}, "original_signal_json should round-trip")
need(g(s, "current_status") == "SIGNAL_STATUS_RECEIVED", "a new signal is RECEIVED")
lsn = g(g(doc, "consistency_token", {}), "lsn", "")
need(LSN.match(lsn), "consistency_token.lsn should look like 0/16B3748")
print(g(s, "signal_id"), lsn)
'
read -r SIGNAL_ID LSN <<<"$RESULT"
echo "grpcurl-examples: signal_id=$SIGNAL_ID lsn=$LSN" >&2

# --- record one pipeline step, then retry it ------------------------------------
EVENT_ID=$(new_uuid)
EVENT_TS=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
EVENT_JSON='{"event":{"event_id":"'$EVENT_ID'","signal_id":"'$SIGNAL_ID'","event_type":"SIGNAL_STATUS_QUEUED_PROCESSING","location":"SIGNAL_LOCATION_PROCESSING_QUEUE","timestamp":"'$EVENT_TS'","worker_id":"worker-1","details":"queued for processing"}}'
call -d "$EVENT_JSON" "$WRITER" signal_audit.v1.SignalWriterService/RecordEvent
expect_json '
e, s = g(doc, "event", {}), g(doc, "signal", {})
need(g(doc, "created") is True, "created should be true for a new event_id")
need(g(e, "event_id") == "'"$EVENT_ID"'", "event_id should be echoed")
need(g(e, "signal_id") == "'"$SIGNAL_ID"'", "signal_id should be echoed")
need(g(e, "event_type") == "SIGNAL_STATUS_QUEUED_PROCESSING", "event_type")
need(g(e, "location") == "SIGNAL_LOCATION_PROCESSING_QUEUE", "location")
need(g(s, "current_status") == "SIGNAL_STATUS_QUEUED_PROCESSING", "the event should move the signal to QUEUED_PROCESSING")
need(g(s, "current_location") == "SIGNAL_LOCATION_PROCESSING_QUEUE", "the event should move the signal to PROCESSING_QUEUE")
lsn = g(g(doc, "consistency_token", {}), "lsn", "")
need(LSN.match(lsn), "consistency_token.lsn")
print(g(e, "sequence", "0"), lsn)
'
read -r SEQUENCE LSN <<<"$RESULT"

# The same event_id again (a client retry): stored once, nothing new created.
call -d "$EVENT_JSON" "$WRITER" signal_audit.v1.SignalWriterService/RecordEvent
expect_json '
need(not g(doc, "created", False), "a retried event_id must not be created again")
need(str(g(g(doc, "event", {}), "sequence", "0")) == "'"$SEQUENCE"'", "a retry returns the stored event")
'

# --- read back from the replica, waiting for the write -------------------------
call -d '{"signal_id":"'"$SIGNAL_ID"'","consistency_token":{"lsn":"'"$LSN"'"}}' \
    "$READER" signal_audit.v1.SignalReaderService/GetSignal
expect_json '
s, events = g(doc, "signal", {}), g(doc, "events", [])
need(g(s, "signal_id") == "'"$SIGNAL_ID"'", "GetSignal should return the signal just written")
need(g(s, "current_status") == "SIGNAL_STATUS_QUEUED_PROCESSING", "the replica should already show the event (consistency token)")
need(len(events) == 2, "the timeline should hold the RECEIVED event and ours, got %d" % len(events))
need(g(events[0], "event_type") == "SIGNAL_STATUS_RECEIVED", "the first event is RECEIVED")
need(g(events[-1], "event_id") == "'"$EVENT_ID"'", "the last event is ours")
need(len(g(doc, "stages", [])) >= 1, "one stage duration between the two events")
'

call -d '{"filter":{"normalised_ticker":"AAPL"},"page_size":10,"include_total_count":true,"consistency_token":{"lsn":"'"$LSN"'"}}' \
    "$READER" signal_audit.v1.SignalReaderService/ListSignals
expect_json '
ids = [g(s, "signal_id") for s in g(doc, "signals", [])]
need("'"$SIGNAL_ID"'" in ids, "ListSignals (newest first) should include the new signal")
need(all(g(s, "normalised_ticker") == "AAPL" for s in g(doc, "signals", [])), "the filter should hold")
need(int(g(doc, "total_count", 0)) >= 1, "total_count should count it")
'

call -d '{"signal_id":"'"$SIGNAL_ID"'","consistency_token":{"lsn":"'"$LSN"'"}}' \
    "$READER" signal_audit.v1.SignalReaderService/ListEvents
expect_json '
ids = [g(e, "event_id") for e in g(doc, "events", [])]
need(len(ids) == 2 and ids[-1] == "'"$EVENT_ID"'", "ListEvents should return both events, ours last: %s" % ids)
'

call "$READER" signal_audit.v1.SignalReaderService/GetReplicationStatus
expect_json '
need(g(doc, "in_recovery") is True, "the reader should be reading a replica (in_recovery)")
need(LSN.match(g(doc, "replay_lsn", "")), "replay_lsn")
'

# --- analytics over the last hour, per minute (the README's examples) ----------
HOUR_AGO=$(date -u -d '-1 hour' +%FT%TZ)
NOW=$(date -u +%FT%TZ)
call -d '{"time_range":{"start":"'"$HOUR_AGO"'","end":"'"$NOW"'"},"bucket_size":"BUCKET_SIZE_MINUTE"}' \
    "$READER" signal_audit.v1.SignalAnalyticsService/GetMetrics
expect_json '
need(g(doc, "as_of"), "GetMetrics answers carry as_of")
need(isinstance(g(doc, "total"), dict), "GetMetrics has a total for the whole range")
'
call -d '{"time_range":{"start":"'"$HOUR_AGO"'","end":"'"$NOW"'"},"bucket_size":"BUCKET_SIZE_MINUTE","metric":"METRIC_SIGNALS","moving_average_window":5}' \
    "$READER" signal_audit.v1.SignalAnalyticsService/GetTimeSeries
expect_json '
points = g(doc, "points", [])
need(60 <= len(points) <= 61, "one point per minute of the hour, gaps filled: %d" % len(points))
need(g(doc, "as_of"), "GetTimeSeries answers carry as_of")
'

# --- secure stack: callers are authenticated and authorised -----------------
if [[ -n ${AUDIT_WRITER_TOKEN:-} && -n ${AUDIT_READER_TOKEN:-} ]]; then
    # refused CODE ARGS... : the call fails with gRPC code CODE.
    refused() {
        local code=$1
        shift
        local shown="$*"
        shown=${shown//"$AUDIT_WRITER_TOKEN"/\$AUDIT_WRITER_TOKEN}
        shown=${shown//"$AUDIT_READER_TOKEN"/\$AUDIT_READER_TOKEN}
        printf '\n$ grpcurl %s %s   # must fail: %s\n' "$SHOWN_TRANSPORT" "$shown" "$code" >&2
        if OUT=$(grpcurl "${TRANSPORT[@]}" -max-time 15 "$@" 2>&1); then
            fail "the call was not refused"
        fi
        expect_text "Code: $code"
    }
    SIGNAL='{"signal":{"ticker":"MSFT","side":"buy","action":"open","price":1,"original_signal_json":"{}"}}'
    refused Unauthenticated -d "$SIGNAL" "$WRITER" signal_audit.v1.SignalWriterService/RecordSignal
    refused PermissionDenied -H "authorization: Bearer $AUDIT_READER_TOKEN" -d "$SIGNAL" \
        "$WRITER" signal_audit.v1.SignalWriterService/RecordSignal
    refused PermissionDenied -H "authorization: Bearer $AUDIT_WRITER_TOKEN" \
        "$READER" signal_audit.v1.SignalReaderService/GetReplicationStatus
    # The signal recorded above names its caller.
    call -d '{"signal_id":"'"$SIGNAL_ID"'"}' "$READER" signal_audit.v1.SignalReaderService/GetSignal
    expect_json '
need(g(g(doc, "signal", {}), "recorded_by") == "stack-writer", "recorded_by should name the writer token")
'
fi

printf '\ngrpcurl-examples: all %d checks passed\n' "$CHECKS" >&2
