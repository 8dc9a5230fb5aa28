"""Real local services (JupyterHub + proxy, slapd, an OIDC provider) started on 127.0.0.1 for the demo and the tests."""
