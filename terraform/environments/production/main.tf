# Production: an EKS cluster with CPU nodes, NVIDIA A100 nodes
# (p4d.24xlarge: 8 x A100 40 GB, 96 vCPU, 1152 GiB) and NVIDIA H100 nodes
# (p5.48xlarge: 8 x H100 80 GB, 192 vCPU, 2048 GiB). The GPU node groups'
# labels and taints are what kubernetes/overlays/production/runfleetd.yaml
# and helm/runfleet/values-production.yaml select and tolerate.
#
# p4d/p5 capacity is scarce: list the AZs where your account has capacity
# (or a capacity reservation) in gpu_availability_zones.
#
#   just tf-init production && just tf-plan production && just tf-apply production

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
  # (`just tf-init production` passes it).
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = local.tags
  }
}

locals {
  name = "runfleet-production"
  tags = {
    Project     = "runfleet"
    Environment = "production"
    ManagedBy   = "opentofu"
  }
}

module "vpc" {
  source             = "../../modules/vpc"
  name               = local.name
  region             = var.region
  cluster_name       = local.name
  cidr_block         = "10.50.0.0/16"
  availability_zones = var.availability_zones
  single_nat_gateway = false
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
    instance_types = ["m6i.8xlarge"]
    min_size       = 3
    max_size       = 20
    desired_size   = 3
    labels = {
      "runfleet.dev/node-group" = "cpu"
    }
  }

  gpu_node_groups = {
    gpu-a100 = {
      instance_type           = "p4d.24xlarge"
      gpu_type                = "a100"
      gpu_count               = 8
      min_size                = 0
      max_size                = 8
      desired_size            = 1
      disk_size_gib           = 1000
      availability_zones      = var.gpu_availability_zones
      capacity_reservation_id = var.a100_capacity_reservation_id
      labels = {
        "runfleet.dev/node-group"  = "gpu-a100"
        "runfleet.dev/accelerator" = "nvidia"
        "runfleet.dev/gpu-type"    = "a100"
      }
      taints = [
        { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" },
      ]
    }
    gpu-h100 = {
      instance_type           = "p5.48xlarge"
      gpu_type                = "h100"
      gpu_count               = 8
      min_size                = 0
      max_size                = 8
      desired_size            = 1
      disk_size_gib           = 2000
      availability_zones      = var.gpu_availability_zones
      capacity_reservation_id = var.h100_capacity_reservation_id
      labels = {
        "runfleet.dev/node-group"  = "gpu-h100"
        "runfleet.dev/accelerator" = "nvidia"
        "runfleet.dev/gpu-type"    = "h100"
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
  image_scanning_configuration {
    scan_on_push = true
  }
}
