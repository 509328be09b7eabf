"""sipd.media package."""
