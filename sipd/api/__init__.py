"""The simple API: ``SimplePeer``, ``Call``, ``IncomingCall`` and their types."""

from sipd.api.call import Call, IncomingCall
from sipd.api.peer import SimplePeer
from sipd.api.types import CallDirection, CallId, CallState

__all__ = ["Call", "CallDirection", "CallId", "CallState", "IncomingCall", "SimplePeer"]
