"""sipd: SIP calls and RTP audio for Twisted programs.

.. code-block:: python

    from sipd import SimplePeer

    alice = await SimplePeer.create("alice", 5060)
    call = await alice.call("sip:bob@127.0.0.1:5061")
    await call.wait_for_answer()
"""

from sipd.api import Call, CallDirection, CallId, CallState, IncomingCall, SimplePeer
from sipd.config import SipdConfig
from sipd.errors import (
    CallCancelled,
    CallError,
    CallFailed,
    CallRejected,
    CallStateError,
    CallTimeout,
    CallTransportError,
    ConfigError,
    SipdError,
    SipdValueError,
    StateTableError,
    TransportError,
)
from sipd.media.frame import AudioFrame
from sipd.media.ports import PortsExhausted
from sipd.session.coordinator import UnifiedCoordinator
from sipd.session.interceptor import (
    Accept,
    Custom,
    Defer,
    InviteDetails,
    ISignalingHandler,
    ISignalingHandlerFactory,
    Reject,
    SignalingDecision,
)
from sipd.session.registrar import Registrar
from sipd.session.session import UnifiedSession
from sipd.session.views import HeadersView, ResponseView
from sipd.sip.auth_server import ha1_set
from sipd.transport.tls import TlsConfig

__version__ = "0.1.0"

__all__ = [
    "Accept",
    "AudioFrame",
    "Call",
    "CallCancelled",
    "CallDirection",
    "CallError",
    "CallFailed",
    "CallId",
    "CallRejected",
    "CallState",
    "CallStateError",
    "CallTimeout",
    "CallTransportError",
    "ConfigError",
    "Custom",
    "Defer",
    "HeadersView",
    "ISignalingHandler",
    "ISignalingHandlerFactory",
    "IncomingCall",
    "InviteDetails",
    "PortsExhausted",
    "Registrar",
    "Reject",
    "ResponseView",
    "SignalingDecision",
    "SimplePeer",
    "SipdConfig",
    "SipdError",
    "SipdValueError",
    "StateTableError",
    "TlsConfig",
    "TransportError",
    "UnifiedCoordinator",
    "UnifiedSession",
    "__version__",
    "ha1_set",
]
