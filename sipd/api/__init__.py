"""sipd.api package."""
