"""A real Kubernetes control plane built from Go modules, for the real test tier."""
