"""KDashSpawner: KubeSpawner with per-user namespaces, guardrails, storage, GPU profiles."""

from .spawner import KDashSpawner

__all__ = ["KDashSpawner"]
