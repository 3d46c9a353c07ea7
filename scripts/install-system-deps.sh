#!/usr/bin/env bash
# Installs the Debian programs Stillpoint's tests use as oracles and servers:
# qemu-img and libvhdi (VHDX oracles), OpenSSH (SFTP target, SSH quiescing), the QEMU guest agent,
# the filesystems' tools (btrfs, xfs, ext4) for real fsfreeze and volume-snapshot tests, and b3sum
# (the BLAKE3 oracle for chunk names).
# Needs root (or sudo). Safe to run again.
set -euo pipefail
pkgs=(qemu-utils libvhdi-utils python3-libvhdi openssh-server openssh-client qemu-guest-agent
      btrfs-progs xfsprogs e2fsprogs util-linux socat b3sum)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then echo "system packages: all present"; exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
