"""KDashSpawner: KubeSpawner with per-user namespaces, guardrails, storage presets and GPU profiles."""
