"""What the scripts in bench/ share: peers, the binary, the machine, processes, report text.

Each script (`bench/run`, `bench/tcp-latency`, `bench/ping`, `bench/fetch`,
`bench/git-clone`, `bench/template`, `bench/pipeline`) is an executable without a .py
ending and imports this module from its own directory:

    sys.dont_write_bytecode = True  # no bench/__pycache__
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib

Only what is the same in two or more scripts is here; what one script measures, and how it
words its tables, stays in that script. Python 3 standard library only. Linux only
(/proc, pidfd).
"""

import argparse
import datetime
import http.server
import math
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RELEASE_BINARY = REPO_ROOT / "target" / "release" / "initbox"
GNU_TIME = "/usr/bin/time"  # Debian package `time`: peak RSS of the process it forks
SOURCES = ("src", "Cargo.toml", "Cargo.lock")  # what the binary is built from

# git as the benchmarks run it (building repositories, serving them, the clones measured):
# no system or user configuration, a fixed identity, no prompts.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "initbox bench",
    "GIT_AUTHOR_EMAIL": "bench@initbox.invalid",
    "GIT_COMMITTER_NAME": "initbox bench",
    "GIT_COMMITTER_EMAIL": "bench@initbox.invalid",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}

T = TypeVar("T")


def log(message: str) -> None:
    """Progress and notes: stderr, so that stdout is the report alone."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def arguments(doc: str) -> argparse.ArgumentParser:
    """The parser every measuring script starts from: the first paragraph of its
    docstring as the description, then --initbox. See parse()."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--initbox", metavar="PATH",
                        help="binary to measure (default: target/release/initbox, built if missing)")
    return parser


def parse(parser: argparse.ArgumentParser, at_least: dict[str, int],
          no_install: str = "do not install missing peers; skip them") -> argparse.Namespace:
    """Adds --no-install (last in --help), parses the command line and checks the counts:
    at_least maps an option (`--trials`) to its smallest value."""
    parser.add_argument("--no-install", action="store_true", help=no_install)
    args = parser.parse_args()
    for option, minimum in at_least.items():
        if getattr(args, option[2:].replace("-", "_")) < minimum:
            parser.error(f"{option} must be at least {minimum}" if minimum
                         else f"{option} must not be negative")
    return args


# --------------------------------------------------------------------------
# Peers: install, locate, describe
# --------------------------------------------------------------------------


def run_step(argv: list[str], what: str) -> bool:
    """Run an install step; on failure say so (with the tail of its output)."""
    log(f"$ {' '.join(argv)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        log(f"  {argv[0]} not found: cannot {what}")
        return False
    if done.returncode != 0:
        tail = "\n".join("  | " + line for line in done.stdout.strip().splitlines()[-5:])
        log(f"  failed to {what} (exit code {done.returncode}):\n{tail}")
        return False
    return True


def install_apt_peers(peers: dict[str, str], consequence: str,
                      options: Iterable[str] = ()) -> None:
    """Install the missing ones of peers ({Debian package: the command it provides}) with
    apt-get, by package name, one at a time, so that one that cannot be had does not block
    the others; consequence says what a failed one means ("its row will be skipped")."""
    missing = [pkg for pkg, command in peers.items() if not shutil.which(command)]
    if not missing:
        return
    if os.geteuid() != 0:
        log(f"not root: not installing {', '.join(missing)} (apt-get install -y {' '.join(missing)})")
        return
    if not run_step(["apt-get", "update"], "refresh the package lists"):
        log(f"could not run apt-get; skipping {', '.join(missing)}")
        return
    for pkg in missing:
        if not run_step(["apt-get", "install", "-y", *options, pkg], f"install {pkg}"):
            log(f"could not install {pkg}; {consequence}")


def installed(candidates: list[T], tool: Callable[[T], str]) -> tuple[list[T], list[str]]:
    """The candidates (each with a .name) whose tool (a command on PATH, or a path) is
    present, and a note for each one that is not."""
    present, skipped = [], []
    for candidate in candidates:
        command = tool(candidate)
        if shutil.which(command) or os.access(command, os.X_OK):
            present.append(candidate)
        else:
            skipped.append(f"{candidate.name}: {Path(command).name} is not installed")
    return present, skipped


def drop_failing(candidates: list[T], trial: Callable[[T], str], baseline: str,
                 skipped: list[str]) -> None:
    """One trial run each first, which also warms the page cache with each binary: a
    candidate whose trial fails (trial returns why, else "") is removed, with a note in
    skipped, except the baseline (named baseline), whose failures are the result."""
    for candidate in list(candidates):
        why = trial(candidate)
        if not why:
            continue
        if candidate.name == baseline:
            log(f"warning: {baseline} failed its trial run: {why}")
            continue
        candidates.remove(candidate)
        skipped.append(f"{candidate.name}: it does not work here ({why} in a trial run)")
        log(f"dropping {candidate.name}: {why}")


def require_gnu_time(script: str) -> None:
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit(f"{script}: {GNU_TIME} (GNU time, Debian package `time`) is needed to "
                 "measure peak RSS")


def resolve_initbox(path: Optional[str], script: str, rebuild: bool = False) -> Path:
    """The initbox binary to measure: --initbox PATH, else target/release/initbox, built
    if it is missing (or always, with rebuild: `bench/run` measures a fresh build)."""
    if path is not None:
        binary = Path(path).resolve()
        if not os.access(binary, os.X_OK):
            sys.exit(f"{script}: --initbox {path}: not an executable file")
        return binary
    binary = RELEASE_BINARY
    if rebuild or not binary.exists():
        build = " ".join(["cargo", "build", "--release", *(["--locked"] if rebuild else [])])
        log(f"building target/release/initbox ({build})" if rebuild
            else f"initbox not built yet; running {build}")
        if subprocess.run(build.split(), cwd=REPO_ROOT).returncode != 0:
            sys.exit(f"{script}: {build} failed")
    sources = [*REPO_ROOT.glob("src/**/*.rs"), REPO_ROOT / "Cargo.toml", REPO_ROOT / "Cargo.lock"]
    if any(source.stat().st_mtime > binary.stat().st_mtime for source in sources if source.exists()):
        log("warning: target/release/initbox is older than the source; "
            "the version line below may not match it (run cargo build --release)")
    return binary


def command_output(argv: list[str]) -> str:
    """What argv prints (stdout, else stderr), stripped; "" if it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def revision(paths: Iterable[str] = SOURCES) -> str:
    """The checkout's commit, `abc1234` or `abc1234 + uncommitted changes` when a tracked
    file under paths (all of them: no paths) differs from it; "" outside a git checkout."""
    head = command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    if not head:
        return ""
    changed = subprocess.run(["git", "-C", str(REPO_ROOT), "diff", "--quiet", "HEAD", "--",
                              *paths]).returncode != 0
    return head + (" + uncommitted changes" if changed else "")


def describe_initbox(initbox: Path) -> str:
    """`initbox 0.1.0 (abc1234)`: its --version line and the commit of the source."""
    version = (command_output([str(initbox), "--version"]) or "initbox ?").splitlines()[0]
    built_from = revision()
    return f"{version} ({built_from})" if built_from else version


def busybox_version() -> str:
    """`BusyBox v1.35.0 (Debian …)`, from the first line of its help."""
    banner = command_output(["busybox", "--help"]).splitlines()
    return banner[0].split(" multi-call")[0] if banner else "busybox ?"


def package_version(package: str) -> str:
    """The installed version of a Debian package, "" if it is not installed."""
    return command_output(["dpkg-query", "-W", "-f", "${Version}", package])


def describe_machine(memory: bool = False) -> str:
    """`2 CPUs (nproc), Linux 6.1.0, Intel(R) Xeon(R) …` (and `, 23 GiB RAM` with memory)."""
    model, ram = "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if memory:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    ram = f", {int(line.split()[1]) // (1024 * 1024)} GiB RAM"
                    break
        except (OSError, ValueError):
            pass
    return f"{len(os.sched_getaffinity(0))} CPUs (nproc), Linux {os.uname().release}, {model}{ram}"


def describe_filesystem(path: Path) -> str:
    """`ext4 on /dev/vda` for the mount that holds path (the longest matching mount point)."""
    best, found = "", "unknown filesystem"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, mount_point, fs_type = line.split()[:3]
        mount_point = mount_point.replace("\\040", " ")
        inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, found = mount_point, f"{fs_type} on {device}"
    return found


def print_heading(versions: str, level: int = 2) -> None:
    """The report's first lines: today's date (UTC) and the machine, then the versions."""
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    print(f"{'#' * level} {date} — {describe_machine()}\n")
    print(f"Versions: {versions}\n")


# --------------------------------------------------------------------------
# git
# --------------------------------------------------------------------------


def git_env(**extra: str) -> dict:
    return dict(os.environ, **GIT_ENV, **extra)


def git(*args: str, cwd: Optional[Path] = None, env: Optional[dict] = None,
        stdin: Optional[bytes] = None) -> str:
    """Run git with GIT_ENV (or env); its stdout, stripped. Fails loudly."""
    done = subprocess.run(["git", *args], cwd=cwd, env=env or git_env(), input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])} …: exit code {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()[-400:]}")
    return done.stdout.decode(errors="replace").strip()


# --------------------------------------------------------------------------
# Processes, files, ports and servers
# --------------------------------------------------------------------------


def wait_exit(pid: int, timeout_s: float) -> Optional[float]:
    """perf_counter() at the moment pid exits, or None after timeout_s. Does not reap.

    A pidfd wakes us the moment the process exits; Popen.wait(timeout=...) polls with
    sleeps of up to 50 ms, which would swamp what is measured.
    """
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(math.ceil(timeout_s * 1000)):
            return None
        return time.perf_counter()
    finally:
        os.close(pidfd)


class ExitWatch:
    """Stamps perf_counter() the moment a process exits (pidfd, in a thread), so that the
    main loop can go on (poll a server, write what is waited for) meanwhile."""

    def __init__(self, pid: int):
        self.at: Optional[float] = None
        self.done = threading.Event()
        self._pidfd = os.pidfd_open(pid)  # now, before anyone can reap pid
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            poller.poll()  # until it exits (the trial kills it at the latest)
            self.at = time.perf_counter()
        finally:
            os.close(self._pidfd)
            self.done.set()

    def wait(self, timeout_s: float) -> bool:
        return self.done.wait(timeout_s)


@dataclass
class Measured:
    wall_ms: float  # spawn to exit
    code: int  # the exit code; -1 when killed after timeout_s
    rss_kib: Optional[int]  # peak RSS (ru_maxrss); None when GNU time wrote none


def run_measured(argv: list[str], rss_file: Optional[Path], *, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 env: Optional[dict] = None, timeout_s: Optional[float] = None) -> Measured:
    """Run argv to its exit and measure it: wall time from spawn to exit, and the peak RSS
    (ru_maxrss) that wait4 reports for it.

    With rss_file, argv runs as `time -f %M -o rss_file ARGV` (GNU time), and the RSS is
    what GNU time writes there. Without it, the RSS is os.wait4()'s here, which is only an
    upper bound: a child of Python starts as a copy of Python (fork, or vfork sharing its
    memory) and Linux keeps the RSS it had before exec in ru_maxrss, so every number would
    be at least Python's own RSS (~15-20 MiB). GNU time is a small C program: its own floor
    is ~1 MiB.

    With timeout_s, the process is killed after that long (code -1).
    """
    if rss_file is not None:
        rss_file.unlink(missing_ok=True)
        argv = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env)
    try:
        exited = None if timeout_s is None else wait_exit(proc.pid, timeout_s)
        if timeout_s is not None and exited is None:
            proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    wall = (exited if exited is not None else time.perf_counter()) - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    code = -1 if timeout_s is not None and exited is None else proc.returncode
    rss: Optional[int] = usage.ru_maxrss
    if rss_file is not None:
        try:
            rss = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            rss = None
    return Measured(wall * 1000, code, rss)


def round_robin(rows: list, trials: int, run_once: Callable[[object], tuple[float, int]],
                label: str = "trial") -> None:
    """Timed runs, round-robin over the rows so that machine noise hits every row alike.
    run_once(row) gives (wall ms, peak RSS KiB), appended to row.times_ms and row.rss_kib,
    or raises RuntimeError, which sets row.failure: a failed row is not run again."""
    for trial in range(1, trials + 1):
        log(f"{label} {trial}/{trials} ...")
        for row in rows:
            if row.failure:
                continue
            try:
                elapsed, rss = run_once(row)
            except RuntimeError as error:
                row.failure = str(error)
                log(f"{row.name}: {error}")
                continue
            row.times_ms.append(elapsed)
            row.rss_kib.append(rss)


# --------------------------------------------------------------------------
# Go peers (dockerize, gomplate, grpc-health-probe, wait4x)
# --------------------------------------------------------------------------

GO_DIR = BENCH_DIR / ".peers" / "go"  # GOPATH, the build cache and bin/ of the Go peers
GO_BIN = GO_DIR / "bin"


@dataclass
class GoPeer:
    """A peer built from the Go module proxy by module name into bench/.peers/go/bin."""
    name: str
    modules: list[str]  # MODULE@VERSION, tried one after another until one builds
    package: str  # the main package inside the module, relative to it ("": the module)
    # OLD=NEW@VERSION for `go mod edit -replace`: a module whose vanity name the proxy
    # refuses, taken from the repository name it is also served under (same commit, whose
    # go.mod declares the vanity name).
    replaces: list[str] = field(default_factory=list)
    why_not: str = ""  # why it could not be built, for the report

    @property
    def binary(self) -> Path:
        return GO_BIN / self.name

    @property
    def built(self) -> bool:
        return os.access(self.binary, os.X_OK)


def go_env() -> dict:
    # A module proxy may refuse a module's version list (403), which `go install
    # MODULE@VERSION` reads (for deprecations) before anything else, so each peer is built
    # from a scratch module instead: require the exact version, then `go build` its main
    # package. Such a proxy also fails the checksum database's lookups (404), hence
    # GOSUMDB=off: the modules are taken as the proxy serves them, acceptable for a
    # benchmark's peer that never leaves bench/.peers. GOTOOLCHAIN=local: the installed go
    # builds it or nothing (no toolchain download).
    return dict(os.environ, GOPATH=str(GO_DIR / "path"), GOCACHE=str(GO_DIR / "cache"),
                GOFLAGS="-mod=mod -modcacherw", GOSUMDB="off", GOTOOLCHAIN="local")


def go_step(argv: list[str], cwd: Path) -> str:
    """Run a go command; "" when it worked, else the last line of its output."""
    log(f"$ {' '.join(argv)}")
    done = subprocess.run(argv, cwd=cwd, env=go_env(), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode == 0:
        return ""
    lines = done.stdout.strip().splitlines()
    log("\n".join("  | " + line for line in lines[-5:]))
    return lines[-1].strip() if lines else f"exit code {done.returncode}"


def build_go_peer(peer: GoPeer) -> None:
    """Build peer from the first of its module versions that builds; peer.why_not says why
    none did. A binary already there is kept."""
    if peer.built:
        return
    if not shutil.which("go"):
        peer.why_not = "go is not installed"
        return
    failures: dict[str, list[str]] = {}  # why: the modules that failed so
    for module in peer.modules:
        path = module.split("@")[0]
        scratch = GO_DIR / "scratch" / peer.name
        remove(scratch)
        scratch.mkdir(parents=True)
        # `go mod edit -require` rather than `go get`: a replaced module's version is not
        # looked up under its own (refused) name.
        edits = [["go", "mod", "edit", "-replace", replace] for replace in peer.replaces]
        steps = [["go", "mod", "init", "scratch"], *edits,
                 ["go", "mod", "edit", "-require", module],
                 ["go", "build", "-o", str(peer.binary), f"{path}/{peer.package}".rstrip("/")]]
        why = next((why for step in steps if (why := go_step(step, scratch))), "")
        if not why:
            return
        failures.setdefault(why, []).append(module)
    peer.why_not = "could not be built here: " + "; ".join(
        f"{' and '.join(modules)}: {why}" for why, modules in failures.items())
    log(f"{peer.name} {peer.why_not}")


def module_version(peer: GoPeer) -> str:
    """The version of peer's module that its binary was built from (its build info): a
    binary built by `go build` has no version string of its own."""
    if not shutil.which("go"):
        return ""
    paths = {module.split("@")[0] for module in peer.modules}
    for line in command_output(["go", "version", "-m", str(peer.binary)]).splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] in ("mod", "dep") and fields[1] in paths:
            return fields[2]
    return ""


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 and nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener:
    """A TCP server on 127.0.0.1:port (0: a port the kernel picks) that accepts every
    connection and closes it at once, which matters for `busybox nc`: it exits only when
    the server hangs up.

    `opened_at` is perf_counter() right after listen(): from then on the kernel completes
    handshakes.
    """

    def __init__(self, port: int = 0):
        self.port = port
        self.opened_at = 0.0

    def __enter__(self) -> "Listener":
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("127.0.0.1", self.port))
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self.opened_at = time.perf_counter()
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # shut down by __exit__
                return
            conn.close()

    def __exit__(self, *exc) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        except OSError:
            pass
        self.sock.close()
        self._thread.join()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that writes no line per request to stderr."""

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's signature
        pass


def start_http_server(handler: type) -> http.server.ThreadingHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (server_address[1]: a port the kernel picked),
    serving in a daemon thread until shutdown()."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --------------------------------------------------------------------------
# Numbers and report text
# --------------------------------------------------------------------------


def median_or_none(values: Iterable[float]) -> Optional[float]:
    values = list(values)
    return statistics.median(values) if values else None


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def number(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(value: Optional[float], base: Optional[float], digits: int = 2) -> str:
    """`1.25×`: value / base; n/a without both."""
    if value is None or not base:
        return "n/a"
    return f"{value / base:.{digits}f}×"


def verdict(ok: Optional[bool], text: str) -> str:
    """`**PASS** (text)` or `**MISS** (text)` for a target; `**n/a** (no result)` when ok
    is None (nothing to judge)."""
    if ok is None:
        return "**n/a** (no result)"
    return f"**{'PASS' if ok else 'MISS'}** ({text})"


def failure_notes(name: str, failures: list[str]) -> list[str]:
    """`- NAME failed 2×: why`, one line per distinct reason."""
    return [f"- {name} failed {failures.count(why)}×: {why}" for why in sorted(set(failures))]


def contender_notes(contenders: list, skipped: list[str]) -> list[str]:
    """The failure notes of each contender (its .name and .failures), then a
    `- skipped NOTE` line for each of skipped."""
    return [*(note for c in contenders for note in failure_notes(c.name, c.failures)),
            *(f"- skipped {note}" for note in skipped)]


def print_notes(notes: list[str]) -> None:
    """The lines under a table (failures, skipped peers), then a blank line if any."""
    for note in notes:
        print(note)
    if notes:
        print()
