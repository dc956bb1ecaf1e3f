#!/usr/bin/env bash
# The initbox demo: a real init sequence, end to end, offline, no cluster needed.
#
# A local "service" comes up a moment after the demo starts (it reserves a port at once but
# only starts listening after 1.5 s, like a database that is still booting). initbox waits
# for the port, then for its HTTP health endpoint, sleeps a second the way many init
# containers do, and finally hands over to the "application" with `--`, exactly as it would
# as a container's entrypoint.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building initbox (release)"
cargo build --release --quiet
initbox=target/release/initbox

workdir=$(mktemp -d)
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "$workdir"' EXIT
echo "ready" > "$workdir/health.txt"

# A tiny HTTP server that binds a free port now and listens only after 1.5 s.
python3 - "$workdir" > "$workdir/port" <<'PY' &
import http.server, os, socket, sys, time
os.chdir(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
time.sleep(1.5)
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Quiet, bind_and_activate=False)
server.socket = sock
server.server_activate()
server.serve_forever()
PY
server_pid=$!
for _ in $(seq 100); do [ -s "$workdir/port" ] && break; sleep 0.05; done
port=$(cat "$workdir/port")

echo "==> the service will listen on 127.0.0.1:$port in 1.5 s; initbox waits for it"
"$initbox" wait-for-tcp "127.0.0.1:$port" --timeout 30s \
  -- "$initbox" wait-for-http "http://127.0.0.1:$port/health.txt" --body-regex '^ready' --timeout 30s \
  -- "$initbox" sleep 1 \
  -- sh -c 'echo "==> application started (pid $$): the init sequence succeeded"'
