"""A site's credentials: its server API secrets (issued once, two active during a rotation) and browser signatures."""
