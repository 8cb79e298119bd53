"""The sync log and the flush: each push's state (transitions), claiming, pre-send checks, goals, sending."""
