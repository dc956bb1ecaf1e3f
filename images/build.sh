#!/usr/bin/env bash
# Build the initbox container image without needing a Docker engine.
#
#   images/build.sh                       # -> localhost/initbox:dev
#   IMAGE=ghcr.io/initbox/initbox:0.1 images/build.sh
#
# Steps: a static binary for x86_64-unknown-linux-musl (adds the rustup target and, as root,
# Debian's musl-tools when they are missing), a throw-away build context holding only that
# binary, then images/Containerfile built with `docker build` when a Docker engine answers,
# else with buildah (vfs storage, chroot isolation: works as root inside a container, no
# daemon). Prints the binary's and the image's size at the end.
#
# Where the musl target cannot be installed (no rustup, or rustup cannot download), the
# binary is built for the glibc target with `+crt-static` instead: also fully static and
# fine in a scratch image, but about 0.9 MB larger.
#
# Environment:
#   IMAGE        image name and tag              (default localhost/initbox:dev)
#   VERSION      org.opencontainers.image.version (default: version in Cargo.toml)
#   ENGINE       docker | buildah | none         (default: docker if `docker info` works;
#                                                 none builds only the binary)
#   TARGET       Rust target triple              (default x86_64-unknown-linux-musl;
#                                                 aarch64-unknown-linux-musl for arm64, see
#                                                 images/README.md)
#   STORAGE_DRIVER  buildah storage driver       (default vfs)
#   PIE          yes: a position-independent (static-pie) binary, its image at a random
#                address (default: not position-independent, for start-up; see below)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

IMAGE=${IMAGE:-localhost/initbox:dev}
TARGET=${TARGET:-x86_64-unknown-linux-musl}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

apt_updated=
apt_install() {
  is_root && command -v apt-get >/dev/null || return 1
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. the static binary -------------------------------------------------------------
host_target=$(rustc -vV | sed -n 's/^host: //p')
if command -v rustup >/dev/null; then
  installed_targets=$(rustup target list --installed)
  if ! grep -qx "$TARGET" <<<"$installed_targets"; then
    log "adding Rust target $TARGET"
    if ! rustup target add "$TARGET"; then
      case "$TARGET" in
        x86_64-unknown-linux-musl) ;;
        *) die "rustup could not add the target $TARGET (offline? no rustup mirror?)" ;;
      esac
      log "rustup could not add $TARGET: building a static glibc binary ($host_target, +crt-static) instead"
      TARGET=$host_target
    fi
  fi
else
  log "rustup not found: assuming the standard library for $TARGET is installed"
fi

case "$TARGET" in
  x86_64-unknown-linux-musl)
    # ring compiles C and assembly; musl-gcc is the C compiler wrapper for the musl target.
    if ! command -v musl-gcc >/dev/null; then
      log "musl-gcc missing: installing musl-tools"
      apt_install musl-tools || die "musl-gcc not found; install musl-tools (apt-get install musl-tools) as root"
    fi
    cc_var="CC_$(printf '%s' "$TARGET" | tr '-' '_')"
    export "$cc_var=${!cc_var:-musl-gcc}"
    ;;
  *-linux-gnu)
    # glibc linked statically. getrandom must call the getrandom(2) function directly: its
    # default probe cannot find the function in a static binary and falls back to
    # /dev/urandom, which an empty root does not have. RUSTFLAGS replaces the rustflags of
    # .cargo/config.toml, so the unwind-table setting is repeated here.
    export RUSTFLAGS="-C target-feature=+crt-static -C force-unwind-tables=no -C link-arg=-Wl,-z,pack-relative-relocs --cfg getrandom_backend=\"linux_getrandom\""
    ;;
esac

# The toolchain's own lld (rust-lld, behind the gcc-ld wrapper rustup ships) links with
# identical code folding: the many copies of generic code that are the same machine code
# become one, about 190 KB less than GNU ld gives. --icf=all: Rust promises nothing about
# the addresses of functions (`fn_addr_eq` may see two as one), and --icf=safe folded
# almost nothing here (3 KB), the compiler marking nearly every function as possibly
# compared. Where the toolchain has no rust-lld, GNU ld links.
gcc_ld="$(rustc --print sysroot)/lib/rustlib/$host_target/bin/gcc-ld"
if [ -x "$gcc_ld/ld.lld" ]; then
  base_flags="-C force-unwind-tables=no -C link-arg=-Wl,-z,pack-relative-relocs"
  lld_flags="-C link-arg=-fuse-ld=lld -C link-arg=-B$gcc_ld -C link-arg=-Wl,--icf=all"
  # RUSTFLAGS replaces .cargo/config.toml's rustflags: what it sets is repeated.
  export RUSTFLAGS="${RUSTFLAGS:-$base_flags} $lld_flags"
  log "linking with rust-lld (identical code folding)"
else
  log "no rust-lld in the toolchain: linking with the system linker (a larger binary)"
fi

# The unwind tables stay out of the musl binary: 1.3 MB that nothing reads, the release
# profile aborting on panic (images/no-unwind-tables.ld says why they are there at all).
# Only with lld and musl: GNU ld refuses the script, and a static glibc binary's start-up
# code (libgcc's crtbeginT.o) would register the tables the script removes. Given to the
# one link of the binary (`cargo rustc`), not in RUSTFLAGS, so the dependencies stay built.
link_args=()
if [ -x "$gcc_ld/ld.lld" ] && [[ "$TARGET" == *-linux-musl ]]; then
  link_args=(-C "link-arg=-Wl,-T,$repo/images/no-unwind-tables.ld")
fi

# Not position-independent, as busybox and the Go tools initbox replaces are: a static-pie
# binary relocates its own pointer tables (vtables, the tables of &str and slices) at every
# start, writing and so copying about 117 pages of .data.rel.ro: 45 % of the page faults
# and a third of the CPU time of `initbox sleep 0`, paid by every short command of every
# pod. The stack, the heap and every mapping stay at random addresses; only the binary's
# own image does not. PIE=yes keeps it position-independent. Given to the one link of the
# binary: with fat LTO its code is generated there, the dependencies stay built.
if [ "${PIE:-no}" != yes ]; then
  link_args+=(-C relocation-model=static)
fi

log "building initbox $VERSION for $TARGET (release)"
cargo rustc --release --locked --target "$TARGET" --bin initbox -- ${link_args[@]+"${link_args[@]}"}
binary="target/$TARGET/release/initbox"
[ -x "$binary" ] || die "cargo did not produce $binary"

if command -v file >/dev/null; then
  kind=$(file -b "$binary")
  case "$kind" in
    *"statically linked"* | *"static-pie linked"*) log "binary: $kind" ;;
    *) die "$binary is not statically linked: $kind" ;;
  esac
fi
case "$TARGET" in
  "$host_target" | x86_64-unknown-linux-musl) "$binary" --version >/dev/null || die "$binary does not run" ;;
esac
# One stable path whatever the target: tests and scripts find the static binary here.
mkdir -p target/static
cp "$binary" target/static/initbox
binary=target/static/initbox
bytes=$(wc -c < "$binary" | tr -d ' ')
log "static binary: $binary ($bytes bytes)"
# The project's promise: every feature in one binary of at most 10 MiB. A build past it
# fails here, where the change that caused it is still in front of its author.
limit=$((10 * 1024 * 1024))
if [ "$bytes" -gt "$limit" ] && [ "${TARGET}" = x86_64-unknown-linux-musl ]; then
  die "the static binary is $bytes bytes, $((bytes - limit)) over the 10 MiB ($limit bytes) limit"
fi
if [ "${ENGINE:-}" = none ]; then
  exit 0
fi

# --- 2. a build context holding only the binary ---------------------------------------
context=$(mktemp -d "${TMPDIR:-/tmp}/initbox-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/initbox"
chmod 0755 "$context/initbox"

build_args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION")
# The image's architecture is the builder's unless the binary is for another one.
platform=()
case "$TARGET" in
  aarch64-*) platform=(--platform linux/arm64) ;;
esac

# --- 3. the image ---------------------------------------------------------------------
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker
  else
    ENGINE=buildah
  fi
fi

case "$ENGINE" in
  docker)
    log "building $IMAGE with docker"
    docker build -f images/Containerfile "${platform[@]}" "${build_args[@]}" -t "$IMAGE" "$context"
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    size="$size bytes"
    ;;
  buildah)
    if ! command -v buildah >/dev/null; then
      log "no Docker engine and no buildah: installing buildah"
      apt_install buildah || die "neither a Docker engine nor buildah is available; install buildah (apt-get install buildah)"
    fi
    log "building $IMAGE with buildah (storage $STORAGE_DRIVER, chroot isolation)"
    buildah --storage-driver "$STORAGE_DRIVER" bud --isolation chroot \
      -f images/Containerfile "${platform[@]}" "${build_args[@]}" -t "$IMAGE" "$context"
    size=$(buildah --storage-driver "$STORAGE_DRIVER" images --format '{{.Size}}' "$IMAGE" | head -n 1)
    log "push with: buildah --storage-driver $STORAGE_DRIVER push $IMAGE docker://REGISTRY/initbox:TAG"
    ;;
  *) die "ENGINE must be docker, buildah or none, not '$ENGINE'" ;;
esac

log "built $IMAGE with $ENGINE"
printf 'binary: %s (%s bytes)\n' "$binary" "$(wc -c < "$binary" | tr -d ' ')"
printf 'image:  %s  size: %s\n' "$IMAGE" "$size"
