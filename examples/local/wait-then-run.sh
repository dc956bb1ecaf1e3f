#!/usr/bin/env bash
# Local development / CI pre-flight: wait until the database port is open and the HTTP
# health endpoint answers, then run the given command in place of this script.
#
#   examples/local/wait-then-run.sh cargo test
#   DB_PORT=55432 HEALTH_URL=http://127.0.0.1:9000/ready examples/local/wait-then-run.sh make e2e
#
# Replaces the usual pre-flight loops:
#   until pg_isready -h localhost -p 5432; do sleep 1; done
#   until curl -fsS http://localhost:8080/healthz; do sleep 1; done
#
# Environment (all optional):
#   INITBOX       the initbox binary            (default: initbox on PATH)
#   DB_HOST       database host                 (default: localhost; 127.0.0.1 or ::1 both work)
#   DB_PORT       database port                 (default: 5432)
#   HEALTH_URL    HTTP endpoint to wait for     (default: http://localhost:8080/healthz)
#   WAIT_TIMEOUT  give up after this long       (default: 60s; exit code 124)
# Any INITBOX_* variable (INITBOX_INTERVAL, INITBOX_LOG_FORMAT, ...) applies as well.
set -euo pipefail

INITBOX=${INITBOX:-initbox}
DB_HOST=${DB_HOST:-localhost}
DB_PORT=${DB_PORT:-5432}
HEALTH_URL=${HEALTH_URL:-http://localhost:8080/healthz}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-60s}

if [ "$#" -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

case "$DB_HOST" in
  *:*) db_target="[$DB_HOST]:$DB_PORT" ;; # an IPv6 literal needs brackets
  *) db_target="$DB_HOST:$DB_PORT" ;;
esac

# Each step execs the next: the database first, then the health endpoint, then the
# command, which ends up with this script's PID, signals and exit code.
exec "$INITBOX" wait-for-tcp "$db_target" --timeout "$WAIT_TIMEOUT" \
  -- "$INITBOX" wait-for-http "$HEALTH_URL" --timeout "$WAIT_TIMEOUT" \
  -- "$@"
