"""Blind transfer: alice calls bob, bob transfers her to carol. See ``__main__.py``."""
