"""Storing what sites report: validated clicks and conversions become rows, with their sync-log entries."""
