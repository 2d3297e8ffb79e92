#!/usr/bin/env bash
# Packer provisioner: pulls $RUNNER_IMAGES (space-separated) into containerd's
# k8s.io namespace, so the first runner pod on a new node starts without
# downloading its (multi-GB) image. ECR images are pulled with the builder's
# temporary instance profile.
set -euo pipefail

images=${RUNNER_IMAGES:-}
if [ -z "$images" ]; then
  echo "prepull-images: no runner_images given, nothing to pull"
  exit 0
fi

systemctl start containerd
for image in $images; do
  registry=${image%%/*}
  creds=()
  if [[ $registry == *.dkr.ecr.*.amazonaws.com ]]; then
    region=$(cut -d. -f4 <<<"$registry")
    creds=(--user "AWS:$(aws ecr get-login-password --region "$region")")
  fi
  echo "prepull-images: $image"
  ctr --namespace k8s.io images pull "${creds[@]}" "$image" >/dev/null
done
ctr --namespace k8s.io images ls -q
