"""KDashAuthenticator: one login for LDAP and OIDC."""
