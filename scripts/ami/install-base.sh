#!/usr/bin/env bash
# Packer provisioner (ami/eks-base, ami/eks-gpu) on the EKS AL2023 AMI:
# ccache and the host directory runner pods mount as /var/cache/runfleet
# (git mirrors and the ccache store), owned by the runner images' uid 1001.
set -euo pipefail

dnf -y -q update --security
dnf -y -q install ccache git jq

install -d -m 0755 -o 1001 -g 1001 /var/cache/runfleet /var/cache/runfleet/ccache \
  /var/cache/runfleet/git
# Runner pods mount the cache with hostPath type Directory: it must exist.
cat >/etc/tmpfiles.d/runfleet.conf <<'CONF'
d /var/cache/runfleet 0755 1001 1001 -
d /var/cache/runfleet/ccache 0755 1001 1001 -
d /var/cache/runfleet/git 0755 1001 1001 -
CONF
ccache --version | head -n 1
