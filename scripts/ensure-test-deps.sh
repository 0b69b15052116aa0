#!/usr/bin/env bash
# Installs the Debian tools the end-to-end tests drive (real NBD clients and servers, FUSE,
# loop devices, ext4, PostgreSQL, headless Chromium for the dashboard), but only when one is
# missing: quiet when all are present.
# As root it runs `apt-get update` once and `apt-get install -y --no-install-recommends`;
# as another user it prints what to install and exits non-zero.
# It also makes sure /dev/loop-control and /dev/fuse exist (modprobe, else mknod).
set -euo pipefail

# command -> Debian package that provides it
declare -A need=(
  [qemu-nbd]=qemu-utils
  [qemu-img]=qemu-utils
  [qemu-io]=qemu-utils
  [nbdinfo]=libnbd-bin
  [nbdcopy]=libnbd-bin
  [nbdfuse]=nbdfuse
  [nbdkit]=nbdkit
  [fio]=fio
  [fusermount3]=fuse3
  [mkfs.ext4]=e2fsprogs
  [e2fsck]=e2fsprogs
  [losetup]=mount
  [mount]=mount
  [sha256sum]=coreutils
  [pgbench]=postgresql-contrib
  [systemd-analyze]=systemd
  [chromium]=chromium
)

has_cmd() {
  # sbin may be off PATH for non-login shells
  PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1
}

missing=()
for cmd in "${!need[@]}"; do
  has_cmd "$cmd" || missing+=("${need[$cmd]}")
done
# PostgreSQL's server binaries live under /usr/lib/postgresql/<ver>/bin, off PATH.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgresql postgresql-contrib)
fi

if ((${#missing[@]} > 0)); then
  # unique, sorted
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ $(id -u) -ne 0 ]]; then
    echo "ensure-test-deps: missing test tools; install them as root: apt-get install -y --no-install-recommends ${pkgs[*]}" >&2
    exit 1
  fi
  echo "ensure-test-deps: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
fi

# Loop devices (mount -o loop) and FUSE (nbdfuse) need their control nodes.
if [[ ! -e /dev/loop-control ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "ensure-test-deps: /dev/loop-control is missing; run as root: modprobe loop" >&2
    exit 1
  fi
  if has_cmd modprobe; then modprobe loop 2>/dev/null || true; fi
  [[ -e /dev/loop-control ]] || mknod -m 0660 /dev/loop-control c 10 237
  for i in 0 1 2 3 4 5 6 7; do
    [[ -e /dev/loop$i ]] || mknod -m 0660 "/dev/loop$i" b 7 "$i"
  done
fi
if [[ ! -e /dev/fuse ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "ensure-test-deps: /dev/fuse is missing; run as root: modprobe fuse" >&2
    exit 1
  fi
  if has_cmd modprobe; then modprobe fuse 2>/dev/null || true; fi
  [[ -e /dev/fuse ]] || mknod -m 0666 /dev/fuse c 10 229
fi
