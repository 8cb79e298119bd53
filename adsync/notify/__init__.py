"""Telling people: staff emails, immediate alerts, the daily digest, support details."""
