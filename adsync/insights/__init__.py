"""Campaign performance from Microsoft's reports: the daily sync and the card's chart."""
