#!/usr/bin/env bash
# Packer provisioner (ami/eks-gpu): the NVIDIA driver (open kernel modules,
# DKMS, branch $NVIDIA_DRIVER_BRANCH), Fabric Manager for NVSwitch systems
# (p4d, p5) and the NVIDIA container toolkit ($NVIDIA_CONTAINER_TOOLKIT_VERSION)
# as containerd's default runtime, so pods that were given GPUs by the device
# plugin see them. Ends with a reboot into the new driver.
set -euo pipefail

: "${NVIDIA_DRIVER_BRANCH:?}" "${NVIDIA_CONTAINER_TOOLKIT_VERSION:?}"

dnf -y -q install "kernel-devel-$(uname -r)" "kernel-headers-$(uname -r)" \
  "kernel-modules-extra-$(uname -r)" dkms

# NVIDIA's CUDA repository for Amazon Linux 2023 (driver and Fabric Manager).
dnf config-manager --add-repo \
  https://developer.download.nvidia.com/compute/cuda/repos/amzn2023/x86_64/cuda-amzn2023.repo
dnf -y -q module install "nvidia-driver:${NVIDIA_DRIVER_BRANCH}-open/default"
dnf -y -q install "nvidia-fabric-manager-${NVIDIA_DRIVER_BRANCH}*" || \
  dnf -y -q install nvidia-fabricmanager
# Fabric Manager only has work on NVSwitch systems (A100/H100 SXM).
mkdir -p /etc/systemd/system/nvidia-fabricmanager.service.d
cat >/etc/systemd/system/nvidia-fabricmanager.service.d/runfleet.conf <<'CONF'
[Unit]
ConditionPathExistsGlob=/dev/nvidia-nvswitch*
CONF
systemctl enable nvidia-fabricmanager || true
systemctl enable nvidia-persistenced || true

# The container toolkit, pinned, and containerd's runtime set to nvidia.
curl -fsSL https://nvidia.github.io/libnvidia-container/stable/rpm/nvidia-container-toolkit.repo \
  -o /etc/yum.repos.d/nvidia-container-toolkit.repo
v=$NVIDIA_CONTAINER_TOOLKIT_VERSION
dnf -y -q install "nvidia-container-toolkit-${v}" "nvidia-container-toolkit-base-${v}" \
  "libnvidia-container-tools-${v}" "libnvidia-container1-${v}"
dnf versionlock add 'nvidia-container-toolkit*' 'libnvidia-container*' 2>/dev/null || true
nvidia-ctk runtime configure --runtime=containerd --set-as-default

dnf clean all
# Reboot into the new kernel modules; packer reconnects (expect_disconnect).
shutdown -r +0 || reboot
