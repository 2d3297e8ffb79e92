# eks-base: the CPU node AMI for runfleet's EKS node groups.
# From the EKS-optimized Amazon Linux 2023 AMI for var.kubernetes_version,
# adds ccache, runfleet-hook (+ shims), the shared cache directory runner
# pods mount (/var/cache/runfleet) and pre-pulls the runner images.
#
#   just ami-validate            (packer fmt -check + packer validate)
#   just ami-build eks-base      (needs AWS credentials)
#
# terraform/modules/eks finds the newest "runfleet-eks-base-<k8s>-*" AMI.

packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type        = string
  default     = "us-west-2"
  description = "Region to build in (and where the AMI lands)."
}

variable "ami_regions" {
  type        = list(string)
  default     = []
  description = "Other regions to copy the AMI to."
}

variable "kubernetes_version" {
  type        = string
  default     = "1.33"
  description = "EKS Kubernetes version of the source AMI (matches terraform's kubernetes_version)."
}

variable "instance_type" {
  type        = string
  default     = "m6i.xlarge"
  description = "Builder instance type."
}

variable "runfleet_source" {
  type        = string
  default     = "build/ami/runfleet-src.tar.gz"
  description = "runfleet's sources (CMakeLists.txt and the directories it adds) as a tarball, relative to where packer runs (the repo root with `just ami-build`, which makes it)."
}

variable "runner_images" {
  type        = list(string)
  default     = []
  description = "Runner images to pre-pull into containerd's k8s.io namespace, e.g. 123456789012.dkr.ecr.us-west-2.amazonaws.com/runfleet/runner-base:0.1.0."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet for the builder instance (default VPC when empty)."
}

locals {
  timestamp = formatdate("YYYYMMDDhhmmss", timestamp())
}

source "amazon-ebs" "eks_base" {
  region          = var.region
  ami_regions     = var.ami_regions
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id
  ami_name        = "runfleet-eks-base-${var.kubernetes_version}-${local.timestamp}"
  ami_description = "runfleet CPU node: EKS ${var.kubernetes_version} AL2023 + ccache + runfleet-hook"

  source_ami_filter {
    filters = {
      name                = "amazon-eks-node-al2023-x86_64-standard-${var.kubernetes_version}-v*"
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["602401143452"] # Amazon EKS AMI account
    most_recent = true
  }

  ssh_username = "ec2-user"
  imds_support = "v2.0"

  # The build instance itself: IMDSv2 only, one hop (the provisioners call
  # IMDS from the host, never from a container).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 40
    volume_type           = "gp3"
    delete_on_termination = true
  }

  # Lets the builder pull runner images from ECR.
  temporary_iam_instance_profile_policy_document {
    Version = "2012-10-17"
    Statement {
      Effect = "Allow"
      Action = [
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
      ]
      Resource = ["*"]
    }
  }

  tags = {
    Name              = "runfleet-eks-base-${var.kubernetes_version}"
    Project           = "runfleet"
    KubernetesVersion = var.kubernetes_version
    SourceAMI         = "{{ .SourceAMI }}"
    SourceAMIName     = "{{ .SourceAMIName }}"
  }
}

build {
  name    = "eks-base"
  sources = ["source.amazon-ebs.eks_base"]

  provisioner "file" {
    source      = var.runfleet_source
    destination = "/tmp/runfleet-src.tar.gz"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    scripts = [
      "${path.root}/../../scripts/ami/install-base.sh",
      "${path.root}/../../scripts/ami/install-runfleet-hook.sh",
    ]
  }

  provisioner "shell" {
    execute_command  = "sudo -E bash '{{ .Path }}'"
    environment_vars = ["RUNNER_IMAGES=${join(" ", var.runner_images)}"]
    script           = "${path.root}/../../scripts/ami/prepull-images.sh"
  }

  post-processor "manifest" {
    output     = "build/ami/eks-base-manifest.json"
    strip_path = true
  }
}
