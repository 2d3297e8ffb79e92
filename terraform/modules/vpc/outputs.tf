output "vpc_id" {
  description = "The VPC's ID."
  value       = aws_vpc.this.id
}

output "public_subnet_ids" {
  description = "Public subnets, one per availability zone (load balancers)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets, one per availability zone (nodes)."
  value       = aws_subnet.private[*].id
}

output "private_subnets_by_az" {
  description = "Private subnet ID by availability zone, for node groups pinned to AZs with GPU capacity."
  value       = { for s in aws_subnet.private : s.availability_zone => s.id }
}

output "nat_public_ips" {
  description = "The NAT gateways' public IPs (runner egress, e.g. for allow-lists)."
  value       = aws_eip.nat[*].public_ip
}
