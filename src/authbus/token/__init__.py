"""The token service: an OAuth2 authorization server (RFC 6749, 7636, 7662, 7009, 8414, 9068)."""
