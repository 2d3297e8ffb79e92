variable "name" {
  description = "Name prefix for the VPC and its resources."
  type        = string
}

variable "region" {
  description = "AWS region (for the S3 gateway endpoint's service name)."
  type        = string
}

variable "cluster_name" {
  description = "EKS cluster that uses this VPC (subnet discovery tags)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's CIDR block; a /16 leaves room for the subnets."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) <= 16
    error_message = "cidr_block must be a valid CIDR of /16 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones, one public and one private subnet in each (2 to 4)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4
    error_message = "EKS needs subnets in at least two availability zones; at most four fit the subnet layout."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all AZs (cheaper) instead of one per AZ (survives an AZ outage)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
