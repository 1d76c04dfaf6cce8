"""Known people: staff exclusion, watchlist alerts (opt-in, audited)."""
