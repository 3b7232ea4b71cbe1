"""Unit tests of the user service (in-memory fakes)."""
