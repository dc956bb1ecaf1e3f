#!/usr/bin/env python3
"""A real grpc.health.v1 server on 127.0.0.1, for the wait-for-grpc tests.

usage: grpc_health_server.py PORT|0 --portfile FILE [--tls CERT KEY] [--no-health]
                             [--app STATUS] [--overall STATUS]
  PORT 0 lets the kernel choose; the bound port is written to FILE (renamed into place).
  --no-health registers no service at all (every call answers UNIMPLEMENTED).
  SIGUSR1 -> service "app" NOT_SERVING, SIGUSR2 -> "app" SERVING (each logged on stdout),
  SIGTERM/SIGINT -> every service NOT_SERVING, then stop.
Exits 98 when the port cannot be bound (the harness retries on another)."""
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

args = sys.argv[1:]
port = int(args.pop(0))
tls = portfile = None
with_health = True
S = health_pb2.HealthCheckResponse
initial = {"": S.SERVING, "app": S.SERVING}
while args:
    a = args.pop(0)
    if a == "--tls":
        tls = (open(args.pop(0), "rb").read(), open(args.pop(0), "rb").read())
    elif a == "--portfile":
        portfile = args.pop(0)
    elif a == "--no-health":
        with_health = False
    elif a == "--app":
        initial["app"] = S.ServingStatus.Value(args.pop(0))
    elif a == "--overall":
        initial[""] = S.ServingStatus.Value(args.pop(0))
    else:
        sys.exit("unknown argument " + a)

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
hs = health.HealthServicer()
if with_health:
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
for name, status in initial.items():
    hs.set(name, status)
addr = "127.0.0.1:%d" % port
try:
    if tls:
        bound = server.add_secure_port(addr, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    else:
        bound = server.add_insecure_port(addr)
except RuntimeError:
    bound = 0
if bound == 0:
    print("cannot bind %s" % addr, flush=True)
    sys.exit(98)
server.start()
with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % bound)
os.rename(portfile + ".tmp", portfile)
print("serving on 127.0.0.1:%d tls=%s" % (bound, bool(tls)), flush=True)

stop = threading.Event()


def on_usr1(*_):
    hs.set("app", S.NOT_SERVING)
    print("app -> NOT_SERVING", flush=True)


def on_usr2(*_):
    hs.set("app", S.SERVING)
    print("app -> SERVING", flush=True)


signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGUSR2, on_usr2)
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
while not stop.wait(0.05):
    pass
hs.enter_graceful_shutdown()
server.stop(grace=0.5).wait()
print("stopped", flush=True)
