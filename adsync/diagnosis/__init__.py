"""Diagnose a connection like an expert: the troubleshooting checklist, run by adsync itself, and reconciliation."""
