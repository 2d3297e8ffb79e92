# Staging: a small EKS cluster with CPU nodes and NVIDIA T4 GPU nodes
# (g4dn.12xlarge: 4 x T4, 48 vCPU, 192 GiB). The GPU node group's labels and
# taints are what kubernetes/overlays/staging/runfleetd.yaml and
# helm/runfleet/values-staging.yaml select and tolerate.
#
#   just tf-init staging && just tf-plan staging && just tf-apply staging

terraform {
  required_version = ">= 1.6.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 7.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0, < 5.0"
    }
  }
  # State in S3 with native locking; bucket and region come from backend.hcl
  # (`just tf-init staging` passes it).
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = local.tags
  }
}

locals {
  name = "runfleet-staging"
  tags = {
    Project     = "runfleet"
    Environment = "staging"
    ManagedBy   = "opentofu"
  }
}

module "vpc" {
  source             = "../../modules/vpc"
  name               = local.name
  region             = var.region
  cluster_name       = local.name
  cidr_block         = "10.40.0.0/16"
  availability_zones = var.availability_zones
  single_nat_gateway = true
  tags               = local.tags
}

module "eks" {
  source                = "../../modules/eks"
  cluster_name          = local.name
  kubernetes_version    = var.kubernetes_version
  subnet_ids            = module.vpc.private_subnet_ids
  private_subnets_by_az = module.vpc.private_subnets_by_az
  public_access_cidrs   = var.public_access_cidrs
  admin_principal_arns  = var.admin_principal_arns
  tags                  = local.tags

  cpu_node_group = {
    name           = "cpu"
    instance_types = ["m6i.4xlarge"]
    min_size       = 2
    max_size       = 6
    desired_size   = 2
    labels = {
      "runfleet.dev/node-group" = "cpu"
    }
  }

  gpu_node_groups = {
    gpu-t4 = {
      instance_type = "g4dn.12xlarge"
      gpu_type      = "t4"
      gpu_count     = 4
      min_size      = 0
      max_size      = 4
      desired_size  = 1
      labels = {
        "runfleet.dev/node-group"  = "gpu-t4"
        "runfleet.dev/accelerator" = "nvidia"
        "runfleet.dev/gpu-type"    = "t4"
      }
      taints = [
        { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" },
      ]
    }
  }
}

# Registries for the images `just docker-push` uploads.
resource "aws_ecr_repository" "images" {
  for_each             = toset(["runfleet/runfleetd", "runfleet/runner-base", "runfleet/runner-gpu"])
  name                 = each.value
  image_tag_mutability = "IMMUTABLE"
  force_delete         = true
  image_scanning_configuration {
    scan_on_push = true
  }
}
