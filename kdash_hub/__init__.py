"""kdash-hub: a JupyterHub plugin pack for data-science platforms on Kubernetes."""

__version__ = "0.1.0"
