"""Real local services (JupyterHub + proxy, slapd, an OIDC provider) on 127.0.0.1.

The demo and the tests start them the same way.
"""
