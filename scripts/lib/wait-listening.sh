# Sourced by the benchmark scripts that start audit-writer/audit-reader
# themselves (bench-soak.sh, bench-retention.sh). Defines
# `wait_listening NAME LOGDIR PORT...`: returns once every PORT on 127.0.0.1
# accepts a connection (30 s each at most); otherwise prints the logs in
# LOGDIR and exits the script naming the port.
wait_listening() {
    local name=$1 logdir=$2 port
    shift 2
    for port in "$@"; do
        for _ in $(seq 1 150); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.2
        done
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
            cat "$logdir"/*.log >&2
            echo "$name: nothing listens on 127.0.0.1:$port" >&2
            exit 1
        }
    done
}
