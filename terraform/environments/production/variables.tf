variable "region" {
  description = "AWS region of the production cluster."
  type        = string
  default     = "us-west-2"
}

variable "availability_zones" {
  description = "Availability zones for subnets and nodes (three, for NAT and control-plane redundancy)."
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

variable "gpu_availability_zones" {
  description = "AZs for the GPU node groups: where p4d.24xlarge/p5.48xlarge capacity (or your reservation) is."
  type        = list(string)
  default     = ["us-west-2a", "us-west-2b"]
}

variable "a100_capacity_reservation_id" {
  description = "On-Demand Capacity Reservation for the p4d.24xlarge group, if any."
  type        = string
  default     = null
}

variable "h100_capacity_reservation_id" {
  description = "On-Demand Capacity Reservation (or Capacity Block) for the p5.48xlarge group, if any."
  type        = string
  default     = null
}
