"""sipd.transport package."""
