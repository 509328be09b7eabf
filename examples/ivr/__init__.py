"""A media server: play a prompt, record the caller's message. See ``__main__.py``."""
