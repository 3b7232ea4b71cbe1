"""Revisions of the user service's schema."""
