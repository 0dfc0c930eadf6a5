# Sourced by scripts/pg-cluster.sh and scripts/stack.sh (not run directly).
#
#   port_conflict PORT    prints why PORT cannot be bound and returns 0,
#                         or prints nothing and returns 1 when it is free
#
# A port counts as taken when a socket listens on it (any address), or when
# a connection that is not in TIME-WAIT uses it as its local port — a client
# whose kernel picked PORT as its source port blocks a server's bind() just
# as well (issue 13: that is why every default port of the project is below
# the ephemeral range, see /proc/sys/net/ipv4/ip_local_port_range). TIME-WAIT
# leftovers do not count: PostgreSQL and tokio set SO_REUSEADDR.
# `ss -tanp` names the process holding the port (root sees every process);
# without ss, bash's /dev/tcp can only tell that something accepts on
# 127.0.0.1:PORT.

# "name (pid N)" list from ss's users:(("name",pid=N,fd=M),...) column.
_port_holders() {
    grep -o '("[^"]*",pid=[0-9]*' | sed -E 's/^\("([^"]*)",pid=([0-9]+)$/\1 (pid \2)/' | sort -u | paste -sd, - || true
}

port_conflict() {
    local port=$1 sockets listen busy holders
    if ! command -v ss >/dev/null 2>&1; then
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf 'port %s is already in use: something accepts connections on 127.0.0.1:%s\n' "$port" "$port"
            return 0
        fi
        return 1
    fi
    sockets=$(ss -Htanp "sport = :$port" 2>/dev/null || true)
    listen=$(awk '$1 == "LISTEN"' <<<"$sockets")
    busy=$(awk '$1 != "LISTEN" && $1 != "TIME-WAIT"' <<<"$sockets")
    if [[ -n $listen ]]; then
        holders=$(_port_holders <<<"$listen")
        printf 'port %s is already bound: listening on %s by %s\n' "$port" \
            "$(awk '{ print $4 }' <<<"$listen" | sort -u | paste -sd' ' -)" \
            "${holders:-a process ss cannot name (ss -ltnp as root shows it)}"
        return 0
    fi
    if [[ -n $busy ]]; then
        holders=$(_port_holders <<<"$busy")
        printf 'port %s is in use as the local port of a connection (%s) held by %s; wait for it to close or pick another port\n' \
            "$port" "$(awk '{ print $1 " " $4 " -> " $5 }' <<<"$busy" | head -n 3 | paste -sd';' -)" \
            "${holders:-a process ss cannot name}"
        return 0
    fi
    return 1
}
