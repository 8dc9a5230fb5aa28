"""An in-process Kubernetes API emulator and kubelet.

The demo and the tests run real KubeSpawner code against it, without a cluster.
"""
