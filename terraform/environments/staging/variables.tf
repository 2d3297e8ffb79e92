variable "region" {
  description = "AWS region of the staging cluster."
  type        = string
  default     = "us-west-2"
}

variable "availability_zones" {
  description = "Availability zones for subnets and nodes (g4dn.12xlarge must be offered in them)."
  type        = list(string)
  default     = ["us-west-2a", "us-west-2b", "us-west-2c"]
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version; the node AMIs (just ami-build) are built for it."
  type        = string
  default     = "1.33"
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API endpoint."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "admin_principal_arns" {
  description = "IAM roles or users given cluster-admin (besides the identity that creates the cluster)."
  type        = list(string)
  default     = []
}
