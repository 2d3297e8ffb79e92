# An EKS cluster for runfleet: the control plane with an OIDC provider (IAM
# roles for service accounts), a CPU node group (runfleetd and CPU runners)
# and one GPU node group per GPU type. Every node group boots the AMIs built
# by ami/ (Packer) through its own launch template, joins with nodeadm
# (Amazon Linux 2023) and carries the labels and taints runfleet's pools
# select and tolerate (kubernetes/overlays/*/runfleetd.yaml).

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
}

data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition

  # Every node group, CPU and GPU, in one map for the launch templates.
  node_groups = merge(
    {
      (var.cpu_node_group.name) = {
        instance_types          = var.cpu_node_group.instance_types
        ami_name_prefix         = "runfleet-eks-base-${var.kubernetes_version}-"
        ami_id                  = var.cpu_node_group.ami_id
        min_size                = var.cpu_node_group.min_size
        max_size                = var.cpu_node_group.max_size
        desired_size            = var.cpu_node_group.desired_size
        disk_size_gib           = var.cpu_node_group.disk_size_gib
        availability_zones      = var.cpu_node_group.availability_zones
        capacity_reservation_id = null
        labels                  = var.cpu_node_group.labels
        taints                  = var.cpu_node_group.taints
      }
    },
    {
      for name, g in var.gpu_node_groups : name => {
        instance_types          = [g.instance_type]
        ami_name_prefix         = "runfleet-eks-gpu-${var.kubernetes_version}-"
        ami_id                  = g.ami_id
        min_size                = g.min_size
        max_size                = g.max_size
        desired_size            = g.desired_size
        disk_size_gib           = g.disk_size_gib
        availability_zones      = g.availability_zones
        capacity_reservation_id = g.capacity_reservation_id
        labels                  = g.labels
        taints                  = g.taints
      }
    }
  )

  # AMIs looked up by name (newest runfleet build for this Kubernetes
  # version) unless a node group pins one.
  lookup_prefixes = toset([for g in local.node_groups : g.ami_name_prefix if g.ami_id == null])

  taint_effect_flag = {
    NO_SCHEDULE        = "NoSchedule"
    NO_EXECUTE         = "NoExecute"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
  }

  # MIME user data with a nodeadm NodeConfig per node group: the kubelet
  # registers with the group's labels and taints from its first start.
  node_config = {
    for name, g in local.node_groups : name => yamlencode({
      apiVersion = "node.eks.aws/v1alpha1"
      kind       = "NodeConfig"
      spec = {
        cluster = {
          name                 = aws_eks_cluster.this.name
          apiServerEndpoint    = aws_eks_cluster.this.endpoint
          certificateAuthority = aws_eks_cluster.this.certificate_authority[0].data
          cidr                 = aws_eks_cluster.this.kubernetes_network_config[0].service_ipv4_cidr
        }
        kubelet = {
          flags = concat(
            ["--node-labels=${join(",", [for k, v in g.labels : "${k}=${v}"])}"],
            length(g.taints) == 0 ? [] : [
              "--register-with-taints=${join(",", [for t in g.taints : "${t.key}=${t.value}:${local.taint_effect_flag[t.effect]}"])}"
            ]
          )
        }
      }
    })
  }
  user_data = {
    for name, cfg in local.node_config : name => join("\n", [
      "MIME-Version: 1.0",
      "Content-Type: multipart/mixed; boundary=\"RUNFLEET\"",
      "",
      "--RUNFLEET",
      "Content-Type: application/node.eks.aws",
      "",
      cfg,
      "--RUNFLEET--",
      "",
    ])
  }
}

# ---------------------------------------------------------------- cluster

resource "aws_iam_role" "cluster" {
  name = "${var.cluster_name}-cluster"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "this" {
  name     = var.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = var.endpoint_public_access
    public_access_cidrs     = var.public_access_cidrs
  }

  kubernetes_network_config {
    service_ipv4_cidr = var.service_ipv4_cidr
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator"]
  tags                      = var.tags

  depends_on = [aws_iam_role_policy_attachment.cluster]
}

resource "aws_eks_access_entry" "admin" {
  for_each      = toset(var.admin_principal_arns)
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  type          = "STANDARD"
}

resource "aws_eks_access_policy_association" "admin" {
  for_each      = toset(var.admin_principal_arns)
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
  access_scope {
    type = "cluster"
  }
  depends_on = [aws_eks_access_entry.admin]
}

# ------------------------------------------------------------ OIDC (IRSA)

data "tls_certificate" "oidc" {
  url = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

resource "aws_iam_openid_connect_provider" "this" {
  url             = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = [data.tls_certificate.oidc.certificates[0].sha1_fingerprint]
  tags            = var.tags
}

# ------------------------------------------------------------------ nodes

resource "aws_iam_role" "node" {
  name = "${var.cluster_name}-node"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
  ])
  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

data "aws_ami" "node" {
  for_each    = local.lookup_prefixes
  owners      = [var.ami_owner]
  most_recent = true
  filter {
    name   = "name"
    values = ["${each.value}*"]
  }
  filter {
    name   = "state"
    values = ["available"]
  }
}

resource "aws_launch_template" "node" {
  for_each    = local.node_groups
  name_prefix = "${var.cluster_name}-${each.key}-"
  image_id    = coalesce(each.value.ami_id, try(data.aws_ami.node[each.value.ami_name_prefix].id, null))

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = each.value.disk_size_gib
      volume_type           = "gp3"
      iops                  = 6000
      throughput            = 500
      encrypted             = true
      delete_on_termination = true
    }
  }

  # IMDSv2 only, and one hop: runner pods cannot reach the node's role.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  dynamic "capacity_reservation_specification" {
    for_each = each.value.capacity_reservation_id == null ? [] : [each.value.capacity_reservation_id]
    content {
      capacity_reservation_target {
        capacity_reservation_id = capacity_reservation_specification.value
      }
    }
  }

  # nodeadm (AL2023) joins the node with the group's labels and taints.
  user_data = base64encode(local.user_data[each.key])

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.cluster_name}-${each.key}" })
  }

  tags = var.tags
}

resource "aws_eks_node_group" "this" {
  for_each        = local.node_groups
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = each.key
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids = (each.value.availability_zones == null ? values(var.private_subnets_by_az)
  : [for az in each.value.availability_zones : var.private_subnets_by_az[az]])
  instance_types = each.value.instance_types
  capacity_type  = "ON_DEMAND"
  labels         = each.value.labels

  dynamic "taint" {
    for_each = each.value.taints
    content {
      key    = taint.value.key
      value  = taint.value.value
      effect = taint.value.effect
    }
  }

  scaling_config {
    min_size     = each.value.min_size
    max_size     = each.value.max_size
    desired_size = each.value.desired_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.node[each.key].id
    version = aws_launch_template.node[each.key].latest_version
  }

  tags = merge(var.tags, {
    "k8s.io/cluster-autoscaler/enabled"             = "true"
    "k8s.io/cluster-autoscaler/${var.cluster_name}" = "owned"
  })

  # The cluster autoscaler (or an operator) owns the current size.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# ----------------------------------------------------------------- addons

resource "aws_eks_addon" "this" {
  for_each                    = toset(["vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent"])
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.value
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  tags                        = var.tags

  # coredns needs a node to run on.
  depends_on = [aws_eks_node_group.this]
}
