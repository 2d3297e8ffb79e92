output "cluster_name" {
  description = "The EKS cluster's name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "The Kubernetes API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority" {
  description = "The cluster CA certificate (base64 PEM)."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider, for IAM roles for service accounts."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "node_role_arn" {
  description = "IAM role of every node group."
  value       = aws_iam_role.node.arn
}

output "node_groups" {
  description = "Each node group's instance types, labels and taints (what runfleet's pools select and tolerate)."
  value = {
    for name, g in local.node_groups : name => {
      instance_types = g.instance_types
      labels         = g.labels
      taints         = g.taints
      ami_id         = aws_launch_template.node[name].image_id
    }
  }
}
