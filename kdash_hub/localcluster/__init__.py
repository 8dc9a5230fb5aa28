"""An in-process Kubernetes API emulator and kubelet: the demo and the tests run real KubeSpawner code without a cluster."""
