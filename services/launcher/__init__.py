"""kdash-launcher: templated side services next to the notebook."""
