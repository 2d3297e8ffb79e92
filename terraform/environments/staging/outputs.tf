output "cluster_name" {
  description = "The EKS cluster's name."
  value       = module.eks.cluster_name
}

output "kubeconfig_command" {
  description = "Writes a kubeconfig context for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "ecr_registry" {
  description = "The registry for `just docker-push IMAGE REGISTRY`, `just k8s-apply staging REGISTRY` and `just helm-install staging REGISTRY`."
  value       = split("/", aws_ecr_repository.images["runfleet/runfleetd"].repository_url)[0]
}

output "ecr_repositories" {
  description = "Repository URL of each runfleet image."
  value       = { for name, r in aws_ecr_repository.images : name => r.repository_url }
}

output "node_groups" {
  description = "Node groups with their instance types, labels and taints."
  value       = module.eks.node_groups
}

output "oidc_provider_arn" {
  description = "The cluster's IAM OIDC provider."
  value       = module.eks.oidc_provider_arn
}

output "nat_public_ips" {
  description = "Egress IPs of the runners."
  value       = module.vpc.nat_public_ips
}
