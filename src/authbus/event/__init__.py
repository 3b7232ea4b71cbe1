"""The event service: the SQL event log, Redis fan-out to subscribers, and its HTTP API."""
