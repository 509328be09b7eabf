"""sipd: SIP calls and RTP audio for Twisted programs.

The package root re-exports the public names as they land; see docs/ for the API.
"""

from sipd.errors import ConfigError, SipdError

__all__ = ["ConfigError", "SipdError", "__version__"]

__version__ = "0.1.0"
