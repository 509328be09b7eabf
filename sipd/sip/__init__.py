"""sipd.sip package."""
