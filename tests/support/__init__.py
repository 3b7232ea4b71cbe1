"""Helpers shared by the test suites (token minting, ...)."""
