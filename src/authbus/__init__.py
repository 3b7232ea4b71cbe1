"""authbus: accounts, an OAuth2 server, an event log with delivery, and the client library."""

__version__ = "0.1.0"
