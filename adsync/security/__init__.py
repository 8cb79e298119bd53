"""Secrets and staff: encryption at rest, key rotation, roles, staff sign-in, security system checks."""
