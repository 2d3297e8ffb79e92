# Partial S3 backend configuration for `tofu init -backend-config=backend.hcl`
# (`just tf-init staging`). Create the bucket once before the first init
# (docs/QUICKSTART.md, step 2).
bucket       = "acme-runfleet-tfstate"
key          = "staging/terraform.tfstate"
region       = "us-west-2"
encrypt      = true
use_lockfile = true
