"""A Microsoft Ads connection's life: Connect / Reconnect / Disconnect, tokens, health (the card's state), throttling."""
