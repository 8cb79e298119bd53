"""Clients for Microsoft Advertising's REST/JSON APIs, one module per API.

- http.py: the one HTTP session factory (timeout, User-Agent); nothing else calls requests.
- errors.py: the error type and the single place where statuses and codes are classified.
- oauth.py: the Microsoft identity platform (authorize URL, code exchange, refresh).
- campaign.py: Campaign Management v13 (ApplyOfflineConversions and adjustments, conversion
  goals, account properties).
- customer.py: Customer Management v13 (the signed-in user and the accounts they reach).
- reporting.py: Reporting v13 (campaign performance, conversions per goal).

Reference for every wire detail: docs/microsoft-api.md.
"""
