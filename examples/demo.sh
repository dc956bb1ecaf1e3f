#!/usr/bin/env bash
# The initbox demo: a real init pipeline, end to end, offline, no cluster needed.
#
# A local "service" comes up a moment after the demo starts (it reserves a port at once but
# only starts listening after 1.5 s, like a database that is still booting). One
# `initbox run` then does what a pod's init containers would: wait for the port and the
# health endpoint, clone a git repository (this one) at the same time, render a config file
# from the clone and the service's address, register with the service, and finally hand
# over to the "application" with `--`, exactly as it would as a container's entrypoint.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building initbox (release)"
cargo build --release --quiet
# Wherever cargo puts its builds (CARGO_TARGET_DIR, a config's build.target-dir, or target/).
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
initbox=$target_dir/release/initbox

workdir=$(mktemp -d)
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "$workdir"' EXIT
echo "ready" > "$workdir/health.txt"

# A tiny HTTP server that binds a free port now, listens only after 1.5 s, serves files and
# accepts POST /register.
python3 - "$workdir" > "$workdir/port" <<'PY' &
import http.server, os, socket, sys, time
os.chdir(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
time.sleep(1.5)
class Service(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        reply = ("registered " + body + "\n").encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Service, bind_and_activate=False)
server.socket = sock
server.server_activate()
server.serve_forever()
PY
server_pid=$!
for _ in $(seq 100); do [ -s "$workdir/port" ] && break; sleep 0.05; done
port=$(cat "$workdir/port")

# The pipeline, as it would sit in a ConfigMap.
cat > "$workdir/pipeline.yaml" <<YAML
statusFile: $workdir/status.json
env:
  SERVICE: "127.0.0.1:$port"
steps:
  - name: wait-for-service
    wait-for-tcp: {targets: ["\$(SERVICE)"], timeout: 30s}
  - name: wait-for-health
    wait-for-http: {urls: ["http://\$(SERVICE)/health.txt"], body-regex: "^ready", timeout: 30s}
  - name: clone
    git-clone: {repo: "file://$PWD", dest: "$workdir/checkout"}
    needs: []
  - name: render
    template:
      src: "$workdir/checkout/examples/demo-app.conf.j2"
      dest: "$workdir/app.conf"
      set: {service: "\$(SERVICE)", features: "fast-start,retries"}
    needs: [clone, wait-for-health]
  - name: register
    register: {url: "http://\$(SERVICE)/register", form: {instance: "\$(HOSTNAME)"}, output: "$workdir/registration.txt"}
YAML

echo "==> the service will listen on 127.0.0.1:$port in 1.5 s; initbox runs the pipeline"
HOSTNAME=${HOSTNAME:-demo} "$initbox" run -f "$workdir/pipeline.yaml" \
  -- sh -c 'echo "==> application started (pid $$): the init pipeline succeeded"; echo "--- $1:"; cat "$1"; echo "--- registration: $(cat "$2")"' \
     app "$workdir/app.conf" "$workdir/registration.txt"
