"""An in-process Kubernetes API emulator and kubelet.

The demo and the tests run real KubeSpawner code against it, without a cluster.
"""

from .cluster import LocalCluster, default_node_specs
from .kubelet import Kubelet, NodeSpec

__all__ = ["Kubelet", "LocalCluster", "NodeSpec", "default_node_specs"]
