"""Test and benchmark helpers (shared fixture lookup). Not installed with the package."""
