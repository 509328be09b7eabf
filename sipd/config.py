"""Settings shared by the library and the daemon.

:class:`SipdConfig` holds every knob a UA has; ``SimplePeer.create`` builds
one from keyword arguments and the daemon builds one from ``etc/sipd.yaml``.
Defaults are what a UA on a LAN wants; the RFC timer values are RFC 3261's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sipd.errors import ConfigError
from sipd.transport.tls import TlsConfig

#: The SIP transports sipd speaks.
TRANSPORTS = ("udp", "tcp", "tls")
#: The SRTP policies (``sipd.sdp.crypto.SrtpPolicy`` values).
SRTP_POLICIES = ("off", "optional", "required")

__all__ = [
    "DEFAULT_STATE_TABLE",
    "SRTP_POLICIES",
    "TRANSPORTS",
    "SipdConfig",
    "default_state_table_path",
]


def default_state_table_path() -> Path:
    """The state table shipped with the package (``etc/state_table.yaml`` links to it)."""
    return Path(str(resources.files("sipd") / "data" / "state_table.yaml"))


DEFAULT_STATE_TABLE = "state_table.yaml"


@dataclass(slots=True)
class SipdConfig:
    """Everything a UA (peer or daemon) needs to know before binding sockets."""

    #: The user part of our own URI (``sip:<name>@host:port``).
    name: str = "sipd"
    #: Address the SIP socket binds to.
    host: str = "127.0.0.1"
    #: SIP port (UDP, and TCP/TLS when ``transport`` asks); 0 picks a free one.
    port: int = 5060
    #: How our requests travel: "udp", "tcp" or "tls" (docs/transports.md). UDP is
    #: always served; "tcp"/"tls" also listen on that stream transport (same port
    #: number) and send every request of ours over it (Via, Contact say so).
    transport: str = "udp"
    #: Certificates for "tls": a client needs the CA, a server its certificate and key.
    tls: TlsConfig | None = None
    #: Close a TCP/TLS connection idle this long (seconds).
    tcp_idle_timeout: float = 300.0
    #: SRTP policy (RFC 3711 keyed by RFC 4568 SDES; docs/srtp.md): "off" plain RTP
    #: only, "optional" offer keys and use SRTP when the peer does, "required" SRTP or
    #: no call (488 to an offer without a usable key).
    srtp: str = "off"
    #: Host written into Contact/Via/SDP when ``host`` is a wildcard (0.0.0.0, ::).
    advertised_host: str | None = None
    #: RTP ports are taken from this inclusive range, even numbers for RTP.
    media_port_min: int = 16384
    media_port_max: int = 32767
    #: RFC 3261 timers (seconds).
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: An outgoing call with no final answer is cancelled after this long.
    ring_timeout: float = 60.0
    #: A deferred incoming INVITE nobody answers gets ``defer_status`` after this long.
    defer_timeout: float = 30.0
    defer_status: int = 480
    #: Codecs we offer and accept, in order of preference (any case): PCMU, PCMA,
    #: G722, opus (docs/codecs.md).
    codecs: list[str] = field(default_factory=lambda: ["PCMU", "PCMA"])
    #: The rate of the audio calls hand to and take from the application (AudioFrame,
    #: WAV play/record): 8000, 16000 or 48000; sipd resamples to the codec's rate.
    sample_rate: int = 8000
    #: Offer and accept RFC 4733 telephone-event.
    dtmf: bool = True
    #: Path to the YAML state table; None means the shipped default.
    state_table_path: str | None = None
    #: User-Agent / Server header value.
    user_agent: str = "sipd/0.1"
    #: Send 180 Ringing as soon as an incoming call is offered to the application.
    send_ringing: bool = True
    #: Jitter buffer depth in 20 ms packets (reordering tolerated).
    jitter_depth: int = 3
    #: Port written into Contact/Via when it differs from the bound one (NAT).
    advertised_port: int | None = None
    #: Behind NAT: when a registrar's 200 shows (``received``/``rport``) that
    #: it saw us at another address, advertise that address and re-register.
    nat_rewrite: bool = True
    #: Follow up to this many 3xx redirects to their Contact (0: report them
    #: as CallRejected with the 3xx status).
    follow_redirects: int = 0
    #: Send every out-of-dialog request via this proxy (``sip:host:port``).
    outbound_proxy: str | None = None
    #: Register at this registrar on start (``sip:host:port``); calls to plain
    #: numbers and to users at its domain then go through it.
    registrar: str | None = None
    #: DNS servers that locate host names in call targets, the outbound proxy and
    #: the registrar (RFC 3263, docs/dns.md): "10.0.0.53", "10.0.0.53:5353" or
    #: "[::1]:5353". None uses the system's (/etc/resolv.conf).
    dns_servers: list[str] | None = None
    #: Seconds to wait for each DNS answer, per server (None: 1 s, then 3 s).
    dns_timeout: float | None = None
    #: Digest credentials for the registrar and for challenged INVITE/BYE.
    username: str | None = None
    password: str | None = None
    #: Registration lifetime to ask for, in seconds.
    register_expires: int = 3600
    #: Keep sending silence when no audio is queued (peers and NATs expect a
    #: steady stream); False pauses and resumes with the marker bit.
    silence_when_idle: bool = True
    #: Seconds between RTCP reports of a call (RFC 3550 §6.2 suggests 5 s).
    rtcp_interval: float = 5.0
    #: RFC 4028 session interval to ask for and to grant, in seconds (0: no
    #: session timer of our own; a peer's request is still honoured).
    session_expires: int = 1800
    #: The smallest session interval we accept (Min-SE). RFC 4028 says at
    #: least 90 on the wire; smaller values are only for tests and labs.
    min_se: int = 90
    #: End an answered call whose peer sent no RTP and no RTCP for this many
    #: seconds while we expect media (not on hold); 0 turns it off.
    media_timeout: float = 60.0
    #: ... or for this many seconds after ICMP said nothing listens at the
    #: peer's RTP or RTCP port any more (its process died); 0: wait for the
    #: full media_timeout regardless.
    media_unreachable_timeout: float = 5.0
    #: Overload control (RFC 3261 §21.5.4): new INVITEs get 503 with
    #: Retry-After while the service falls behind; requests inside dialogs,
    #: ACK, BYE and CANCEL are always served. See sipd/session/overload.py.
    overload_control: bool = True
    #: Refuse new INVITEs while the event loop runs this late (seconds).
    overload_max_lag: float = 0.2
    #: ... and has for this many seconds (one stall is not an overload; 0: at once).
    overload_lag_sustain: float = 1.0
    #: ... or while this many bytes of datagrams wait unread (Linux; 0: off).
    overload_max_backlog: int = 262144
    #: Refuse new INVITEs while this many incoming INVITEs await a final answer.
    overload_max_pending: int = 2000
    #: New INVITEs admitted per second, all sources together (0: no limit).
    overload_max_invite_rate: float = 0.0
    #: New INVITEs admitted per second from one source IP, and the burst allowed.
    overload_source_rate: float = 50.0
    overload_source_burst: int = 100
    #: Seconds a refused caller is told to wait (Retry-After of the 503).
    overload_retry_after: int = 5

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check ranges and types; raise :class:`ConfigError` naming the key."""
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port: {self.port} is not a UDP port (0-65535)")
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"transport: {self.transport!r} is not one of {', '.join(TRANSPORTS)}"
            )
        if self.tls is not None and not isinstance(self.tls, TlsConfig):
            raise ConfigError(f"tls: {self.tls!r} must be a sipd.TlsConfig")
        if not isinstance(self.tcp_idle_timeout, int | float) or self.tcp_idle_timeout <= 0:
            raise ConfigError(f"tcp_idle_timeout: {self.tcp_idle_timeout!r} must be > 0 seconds")
        if str(self.srtp).strip().lower() not in SRTP_POLICIES:
            raise ConfigError(f"srtp: {self.srtp!r} is not one of {', '.join(SRTP_POLICIES)}")
        self.srtp = str(self.srtp).strip().lower()
        if not (1024 <= self.media_port_min <= self.media_port_max < 65536):
            raise ConfigError(
                f"media_port_min/media_port_max: {self.media_port_min}-{self.media_port_max} "
                "must be a range within 1024-65535"
            )
        if self.media_port_max - self.media_port_min < 1:
            raise ConfigError("media_port_min/media_port_max: the range needs at least 2 ports")
        for key in ("t1", "t2", "t4", "ring_timeout", "defer_timeout", "rtcp_interval"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{key}: {value!r} must be a positive number of seconds")
        if self.t2 < self.t1:
            raise ConfigError(f"t2: {self.t2} must not be smaller than t1 ({self.t1})")
        from sipd.media.codecs import CODEC_NAMES

        known = {name.casefold() for name in CODEC_NAMES}
        unknown = [c for c in self.codecs if not isinstance(c, str) or c.casefold() not in known]
        if unknown or not self.codecs:
            raise ConfigError(
                f"codecs: {unknown or self.codecs} — supported codecs are {', '.join(CODEC_NAMES)}"
            )
        if self.sample_rate not in (8000, 16000, 48000):
            raise ConfigError(f"sample_rate: {self.sample_rate!r} must be 8000, 16000 or 48000 Hz")
        if not isinstance(self.jitter_depth, int) or not 1 <= self.jitter_depth <= 50:
            raise ConfigError(f"jitter_depth: {self.jitter_depth!r} must be 1-50 packets")
        for key in ("outbound_proxy", "registrar"):
            value = getattr(self, key)
            if value is not None:
                from sipd.sip.errors import SipParseError
                from sipd.sip.uri import parse_uri

                try:
                    parse_uri(value if ":" in value.split("@")[0] else f"sip:{value}")
                except SipParseError as exc:
                    raise ConfigError(f"{key}: {value!r} is not a SIP URI ({exc})") from None
        self._validate_dns()
        if not isinstance(self.follow_redirects, int) or not 0 <= self.follow_redirects <= 20:
            raise ConfigError(f"follow_redirects: {self.follow_redirects!r} must be 0-20 hops")
        if not isinstance(self.register_expires, int) or self.register_expires < 1:
            raise ConfigError(f"register_expires: {self.register_expires!r} must be >= 1 second")
        if not isinstance(self.min_se, int) or self.min_se < 1:
            raise ConfigError(f"min_se: {self.min_se!r} must be a positive number of seconds")
        expires = self.session_expires
        if not isinstance(expires, int) or (expires != 0 and expires < self.min_se):
            raise ConfigError(
                f"session_expires: {expires!r} must be 0 (off) or at least min_se ({self.min_se})"
            )
        for key in ("media_timeout", "media_unreachable_timeout"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{key}: {value!r} must be >= 0 seconds (0 turns it off)")
        self._validate_overload()
        if not 300 <= self.defer_status <= 699:
            raise ConfigError(f"defer_status: {self.defer_status} must be a final status 300-699")

    def _validate_dns(self) -> None:
        servers = self.dns_servers
        if servers is not None:
            if isinstance(servers, str) or not isinstance(servers, list | tuple) or not servers:
                raise ConfigError(
                    f"dns_servers: {servers!r} must be a list such as ['10.0.0.53', "
                    "'127.0.0.1:5353'], or None for the system's resolvers"
                )
            from sipd.dns.resolver import parse_nameserver

            for server in servers:
                try:
                    parse_nameserver(str(server))
                except ConfigError as exc:
                    raise ConfigError(f"dns_servers: {exc}") from None
        timeout = self.dns_timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise ConfigError(f"dns_timeout: {timeout!r} must be a positive number of seconds")

    def _validate_overload(self) -> None:
        for key in (
            "overload_max_lag",
            "overload_lag_sustain",
            "overload_max_invite_rate",
            "overload_source_rate",
        ):
            value = getattr(self, key)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{key}: {value!r} must be a number >= 0 (0 turns it off)")
        for key in (
            "overload_max_backlog",
            "overload_max_pending",
            "overload_source_burst",
            "overload_retry_after",
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{key}: {value!r} must be a whole number >= 0")

    @property
    def contact_host(self) -> str:
        """The host others reach us at (never a wildcard address)."""
        if self.advertised_host:
            return self.advertised_host
        if self.host in ("0.0.0.0", "", "::"):
            return "127.0.0.1" if self.host != "::" else "::1"
        return self.host

    def replace(self, **changes: object) -> SipdConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
