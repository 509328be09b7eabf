"""A call engine: route incoming calls by dialled number. See ``__main__.py``."""
