"""A call centre: customers queue on hold until an agent is free. See ``__main__.py``."""
