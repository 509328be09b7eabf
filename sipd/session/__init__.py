"""sipd.session package."""
