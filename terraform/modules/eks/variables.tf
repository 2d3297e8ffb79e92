variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and of the node AMIs (ami/ builds one per version)."
  type        = string
  default     = "1.33"
}

variable "subnet_ids" {
  description = "Subnets for the control plane's network interfaces (the VPC's private subnets)."
  type        = list(string)
}

variable "private_subnets_by_az" {
  description = "Private subnet ID by availability zone; node groups run in all of them unless they name their AZs."
  type        = map(string)
}

variable "endpoint_public_access" {
  description = "Whether the Kubernetes API endpoint is reachable from the internet (restricted by public_access_cidrs)."
  type        = bool
  default     = true
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "service_ipv4_cidr" {
  description = "CIDR for Kubernetes Services."
  type        = string
  default     = "172.20.0.0/16"
}

variable "admin_principal_arns" {
  description = "IAM principals (roles, users) granted cluster-admin through EKS access entries."
  type        = list(string)
  default     = []
}

variable "ami_owner" {
  description = "Account that owns the AMIs built by ami/ (\"self\": this account)."
  type        = string
  default     = "self"
}

variable "cpu_node_group" {
  description = "The CPU node group: runfleetd, cluster add-ons and CPU runner pods."
  type = object({
    name               = optional(string, "cpu")
    instance_types     = list(string)
    min_size           = number
    max_size           = number
    desired_size       = number
    disk_size_gib      = optional(number, 200)
    availability_zones = optional(list(string))
    ami_id             = optional(string)
    labels             = map(string)
    taints = optional(list(object({
      key    = string
      value  = string
      effect = string
    })), [])
  })

  validation {
    condition     = lookup(var.cpu_node_group.labels, "runfleet.dev/node-group", "") == var.cpu_node_group.name
    error_message = "The CPU node group's labels must include runfleet.dev/node-group = its name (pools select node groups by it)."
  }
}

variable "gpu_node_groups" {
  description = <<-EOT
    GPU node groups by name, one per GPU type. Each carries the labels the
    runfleet pools select (runfleet.dev/node-group = its name,
    runfleet.dev/accelerator = nvidia for the NVIDIA device plugin,
    runfleet.dev/gpu-type) and the nvidia.com/gpu NoSchedule taint the GPU
    pools tolerate.
  EOT
  type = map(object({
    instance_type           = string
    gpu_type                = string
    gpu_count               = number
    min_size                = number
    max_size                = number
    desired_size            = number
    disk_size_gib           = optional(number, 500)
    availability_zones      = optional(list(string))
    capacity_reservation_id = optional(string)
    ami_id                  = optional(string)
    labels                  = map(string)
    taints = list(object({
      key    = string
      value  = string
      effect = string
    }))
  }))
  default = {}

  validation {
    condition = alltrue([for name, g in var.gpu_node_groups :
      lookup(g.labels, "runfleet.dev/node-group", "") == name &&
      lookup(g.labels, "runfleet.dev/accelerator", "") == "nvidia" &&
      lookup(g.labels, "runfleet.dev/gpu-type", "") == g.gpu_type
    ])
    error_message = "Each GPU node group needs labels runfleet.dev/node-group = its name, runfleet.dev/accelerator = nvidia and runfleet.dev/gpu-type = its gpu_type."
  }

  validation {
    condition = alltrue([for g in var.gpu_node_groups :
      anytrue([for t in g.taints : t.key == "nvidia.com/gpu" && t.effect == "NO_SCHEDULE"])
    ])
    error_message = "Each GPU node group needs the nvidia.com/gpu NO_SCHEDULE taint, so only pods that asked for GPUs land there."
  }

  validation {
    condition = alltrue(flatten([for g in var.gpu_node_groups :
      [for t in g.taints : contains(["NO_SCHEDULE", "NO_EXECUTE", "PREFER_NO_SCHEDULE"], t.effect)]
    ]))
    error_message = "Taint effects are NO_SCHEDULE, NO_EXECUTE or PREFER_NO_SCHEDULE (the EKS API's spelling)."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
