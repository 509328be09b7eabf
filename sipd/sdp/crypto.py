"""SDES: SRTP keys carried in SDP ``a=crypto`` lines (RFC 4568), and the srtp policy.

Sans-I/O and pure: parsing and formatting ``a=crypto:<tag> <suite>
inline:<key||salt>[|lifetime][|MKI:len]`` (RFC 4568 §9.1, §9.2) for the suites every
SDES peer has (``AES_CM_128_HMAC_SHA1_80`` and ``_32``, §6.2); fresh keys from
:mod:`secrets`; the answerer's choice (§7.1.2) and the offerer's check of the answer
(§7.1.3); and the ``srtp`` policy (``off`` | ``optional`` | ``required``): what goes in
our offer, and whether a peer's offer or answer gives SRTP, plain RTP or refusal (488).

A line from the network never raises: what we cannot use comes back as
:class:`UnusableCrypto` with a reason. Reasons, ``repr`` and ``str`` never contain key
material, so any of these objects may be logged. (The SDP body itself of course does:
SDES keys travel in the signalling, which is why SDES wants SIP over TLS.)
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipd.errors import SdpNegotiationError, SipdValueError
from sipd.sdp.model import Attribute, MediaDescription

__all__ = [
    "RTP_AVP",
    "RTP_SAVP",
    "SUPPORTED_SUITES",
    "CryptoAttribute",
    "NegotiatedSrtp",
    "SrtpAction",
    "SrtpDecision",
    "SrtpKeys",
    "SrtpNegotiationError",
    "SrtpOffer",
    "SrtpPolicy",
    "SrtpSuite",
    "UnusableCrypto",
    "answer_srtp",
    "crypto_attributes",
    "offer_srtp",
    "parse_crypto",
    "process_srtp_answer",
    "select_crypto",
]

#: The plain RTP profile (RFC 3551) and the secure one (RFC 3711 §12).
RTP_AVP = "RTP/AVP"
RTP_SAVP = "RTP/SAVP"

_MAX_TAG = 999_999_999  # tag = 1*9DIGIT (RFC 4568 §9.1)
_SUITE_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")
_PARAM_NAME = re.compile(r"-?[A-Za-z0-9_]{1,32}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_MKI_LENGTH = re.compile(r"[0-9]{1,3}")  # 1*3DIGIT, 1..128 (RFC 4568 §9.2)


class SrtpNegotiationError(SdpNegotiationError):
    """SRTP could not be agreed under the ``srtp`` policy: the call is refused with 488.

    Raised by :meth:`SrtpDecision.error` for the caller that wants an exception; the
    message says which side wanted what (e.g. ``srtp='required'`` and no usable key).
    """


class SrtpSuite(enum.StrEnum):
    """The SRTP crypto suites sipd speaks (RFC 4568 §6.2.1, §6.2.2).

    Both are AES-128 in counter mode with HMAC-SHA1 (RFC 3711 §4), a 128-bit master key
    and a 112-bit master salt; they differ in the SRTP authentication tag (80 or 32
    bits; SRTCP always carries an 80-bit tag).
    """

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def key_length(self) -> int:
        return 16  # master key bytes

    @property
    def salt_length(self) -> int:
        return 14  # master salt bytes

    @property
    def key_salt_length(self) -> int:
        """Bytes of ``key || salt`` in an ``inline:`` key (30, i.e. 40 base64 characters)."""
        return self.key_length + self.salt_length

    @property
    def tag_length(self) -> int:
        """SRTP authentication tag bytes (10 or 4)."""
        return 10 if self is SrtpSuite.AES_CM_128_HMAC_SHA1_80 else 4

    @property
    def max_lifetime(self) -> int:
        """The most SRTP packets one master key may protect (RFC 4568 §6.2.1: 2^48)."""
        return 1 << 48


#: What we offer and accept, in our order of preference.
SUPPORTED_SUITES: tuple[SrtpSuite, ...] = (
    SrtpSuite.AES_CM_128_HMAC_SHA1_80,
    SrtpSuite.AES_CM_128_HMAC_SHA1_32,
)


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """One direction's SRTP master key and salt (RFC 3711 §8.2) and their suite.

    ``key_salt`` is the concatenation RFC 4568 §6.1 puts base64-encoded in ``inline:``.
    It never appears in ``repr``/``str``.
    """

    suite: SrtpSuite
    key_salt: bytes = field(repr=False)

    def __post_init__(self) -> None:
        size = self.suite.key_salt_length
        if not isinstance(self.key_salt, bytes) or len(self.key_salt) != size:
            raise SipdValueError(f"{self.suite} needs {size} bytes of master key and salt")

    @classmethod
    def generate(cls, suite: SrtpSuite = SrtpSuite.AES_CM_128_HMAC_SHA1_80) -> SrtpKeys:
        """A fresh random master key and salt (RFC 4568 §6.1; RFC 3711 §8.1 wants them
        unpredictable), from :func:`secrets.token_bytes`."""
        return cls(suite, secrets.token_bytes(suite.key_salt_length))

    @property
    def master_key(self) -> bytes:
        return self.key_salt[: self.suite.key_length]

    @property
    def master_salt(self) -> bytes:
        return self.key_salt[self.suite.key_length :]

    def to_base64(self) -> str:
        """The ``inline:`` key text (key material: put it in SDP, never in a log)."""
        return base64.b64encode(self.key_salt).decode("ascii")

    def __repr__(self) -> str:
        return f"SrtpKeys(suite={self.suite}, key=<{len(self.key_salt)} bytes hidden>)"


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """A usable ``a=crypto`` line (RFC 4568 §4, §9.1): tag, suite and one inline key.

    ``lifetime`` is the key's lifetime in packets as the line gave it (None: the suite's
    maximum). We do not re-key, so it is informational. :meth:`to_value` is the text
    after ``a=crypto:``; ``repr``/``str`` show no key.
    """

    tag: int
    keys: SrtpKeys
    lifetime: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= _MAX_TAG:
            raise SipdValueError(f"a crypto tag is 1 to 9 digits, got {self.tag}")
        if self.lifetime is not None and not 1 <= self.lifetime <= self.suite.max_lifetime:
            raise SipdValueError(f"key lifetime {self.lifetime} is outside 1..2^48")

    @property
    def suite(self) -> SrtpSuite:
        return self.keys.suite

    def to_value(self) -> str:
        """``<tag> <suite> inline:<base64>[|<lifetime>]`` (RFC 4568 §9.1, §9.2)."""
        value = f"{self.tag} {self.suite} inline:{self.keys.to_base64()}"
        if self.lifetime is not None:
            value += f"|{_format_lifetime(self.lifetime)}"
        return value

    def to_attribute(self) -> Attribute:
        """The ``a=crypto`` attribute for a media description."""
        return Attribute("crypto", self.to_value())


@dataclass(frozen=True, slots=True)
class UnusableCrypto:
    """An ``a=crypto`` line we cannot use and why; ``tag``/``suite`` when they were readable.

    Never raised: a peer's odd line is skipped (RFC 4568 §7.1.2 has the answerer try the
    next one). ``reason`` quotes no key material.
    """

    reason: str
    tag: int | None = None
    suite: str | None = None


def _format_lifetime(lifetime: int) -> str:
    power = lifetime.bit_length() - 1
    return f"2^{power}" if lifetime == 1 << power else str(lifetime)


def parse_crypto(value: str | None) -> CryptoAttribute | UnusableCrypto:
    """Read the value of one ``a=crypto`` attribute (the text after ``a=crypto:``).

    Follows the grammar of RFC 4568 §9.1 (tag, suite, key-params, session-params) and
    §9.2 (SRTP ``inline:`` key-info). What we cannot use gives :class:`UnusableCrypto`:
    an unknown suite, a key that is not base64 or not 30 bytes, a lifetime above
    2^48, an MKI or several keys (§6.1: we do not do MKI), and session parameters that
    change SRTP (KDR, UNENCRYPTED_*, UNAUTHENTICATED_SRTP, FEC_*) or are unknown
    (§6.3.7: a new parameter is mandatory unless it starts with ``-``). ``WSH=`` is only
    a hint (§6.3.6) and is ignored, like ``-`` parameters.
    """
    if not isinstance(value, str) or not value.strip():
        return UnusableCrypto("a=crypto has no value")
    parts = value.split()
    tag_text = parts[0]
    if not tag_text.isascii() or not tag_text.isdigit() or len(tag_text) > 9:
        return UnusableCrypto("the crypto tag is not 1 to 9 digits")
    tag = int(tag_text)
    if len(parts) < 3:
        return UnusableCrypto("a=crypto needs a tag, a crypto suite and key parameters", tag)
    suite_text, key_params, session_params = parts[1], parts[2], parts[3:]
    try:
        suite = SrtpSuite(suite_text)
    except ValueError:
        if _SUITE_NAME.fullmatch(suite_text) and "_" in suite_text:
            # Only a name that looks like one is quoted: never echo a misplaced key.
            return UnusableCrypto(f"crypto suite {suite_text} is not supported", tag, suite_text)
        return UnusableCrypto("the crypto suite is malformed", tag)
    result = _parse_key_params(key_params, suite)
    if isinstance(result, str):
        return UnusableCrypto(result, tag, suite)
    problem = _check_session_params(session_params)
    if problem is not None:
        return UnusableCrypto(problem, tag, suite)
    keys, lifetime = result
    return CryptoAttribute(tag, keys, lifetime)


def _parse_key_params(text: str, suite: SrtpSuite) -> tuple[SrtpKeys, int | None] | str:
    """``inline:<key||salt>[|lifetime][|MKI:length]`` (RFC 4568 §9.2), or why not."""
    if ";" in text:
        return "several keys in one crypto line need MKI, which is not supported"
    method, colon, info = text.partition(":")
    if not colon or method.casefold() != "inline":
        return "the key method is not inline: (RFC 4568 §6.1)"
    key_text, *fields = info.split("|")
    try:
        key_salt = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        return "the inline key is not valid base64"
    if len(key_salt) != suite.key_salt_length:
        return (
            f"the inline key is {len(key_salt)} bytes; {suite} needs {suite.key_salt_length}"
            f" (a {suite.key_length}-byte master key and a {suite.salt_length}-byte salt)"
        )
    if len(fields) > 2:
        return "the inline key has too many |-separated fields"
    lifetime: int | None = None
    for position, text_field in enumerate(fields):
        if ":" in text_field:
            if position != len(fields) - 1:
                return "the MKI must come last in the inline key"
            return _mki_problem(text_field)
        if position != 0:
            return "the key lifetime must come before the MKI"
        lifetime_or_problem = _parse_lifetime(text_field, suite)
        if isinstance(lifetime_or_problem, str):
            return lifetime_or_problem
        lifetime = lifetime_or_problem
    return SrtpKeys(suite, key_salt), lifetime


def _parse_lifetime(text: str, suite: SrtpSuite) -> int | str:
    """``["2^"] 1*DIGIT`` (RFC 4568 §9.2), from 1 to the suite's maximum (§6.2.1)."""
    power = text.startswith("2^")
    digits = text[2:] if power else text
    if not _DIGITS.fullmatch(digits):
        return "the key lifetime is not a number or a power of two"
    lifetime = 1 << min(int(digits), 64) if power else int(digits)
    if not 1 <= lifetime <= suite.max_lifetime:
        return "the key lifetime is outside 1..2^48 packets (RFC 4568 §6.2.1)"
    return lifetime


def _mki_problem(text: str) -> str:
    """Why an ``MKI:length`` field (RFC 4568 §9.2) makes the line unusable for us."""
    value, _, length = text.partition(":")
    if not (_DIGITS.fullmatch(value) and _MKI_LENGTH.fullmatch(length) and 1 <= int(length) <= 128):
        return "the MKI field is malformed (MKI:length with length 1 to 128)"
    return "an MKI (master key identifier) is not supported"


#: RFC 4568 §6.3.1-§6.3.5: parameters that change what SRTP does; libsrtp's profiles
#: (what pylibsrtp exposes) cannot follow them.
_SRTP_CHANGING = frozenset(
    {"KDR", "UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP", "FEC_ORDER", "FEC_KEY"}
)


def _check_session_params(params: Sequence[str]) -> str | None:
    """Why the session parameters (RFC 4568 §6.3) make the line unusable, or None."""
    for param in params:
        name, equals, value = param.partition("=")
        if name.startswith("-"):
            continue  # §6.3.7: optional, may be ignored
        if name == "WSH":
            if not equals or not _DIGITS.fullmatch(value) or int(value) < 64:
                return "the replay window hint WSH= must be a number of at least 64"
            continue  # §6.3.6: a hint; libsrtp's window (128) is used
        if name in _SRTP_CHANGING:
            return f"session parameter {name} is not supported (RFC 4568 §6.3)"
        if _PARAM_NAME.fullmatch(name):
            return f"unknown session parameter {name} (RFC 4568 §6.3.7 makes it mandatory)"
        return "a session parameter is malformed"
    return None


def crypto_attributes(media: MediaDescription) -> list[CryptoAttribute | UnusableCrypto]:
    """Every ``a=crypto`` line of one media description, parsed, in the writer's order.

    A tag seen before in the same media description makes the later line unusable
    (RFC 4568 §4: tags identify lines within a media description).
    """
    found: list[CryptoAttribute | UnusableCrypto] = []
    seen: set[int] = set()
    for attribute in media.attributes:
        if attribute.name != "crypto":
            continue
        parsed = parse_crypto(attribute.value)
        tag = parsed.tag
        if tag is not None and tag in seen:
            parsed = UnusableCrypto(f"crypto tag {tag} is repeated", tag, parsed.suite)
        if tag is not None:
            seen.add(tag)
        found.append(parsed)
    return found


@dataclass(frozen=True, slots=True)
class NegotiatedSrtp:
    """The keys one call's SRTP uses: ``local`` protects what we send, ``remote`` checks
    what we receive (RFC 4568 §6.1: each side sends with the key it put in its own SDP).
    ``tag`` is the crypto line the two sides agreed on."""

    tag: int
    local: SrtpKeys
    remote: SrtpKeys

    def __post_init__(self) -> None:
        if self.local.suite is not self.remote.suite:
            raise SipdValueError(
                f"both directions must use one suite, got {self.local.suite} and "
                f"{self.remote.suite}"
            )

    @property
    def suite(self) -> SrtpSuite:
        return self.local.suite


def select_crypto(
    offered: Sequence[CryptoAttribute | UnusableCrypto],
    suites: Sequence[SrtpSuite] = SUPPORTED_SUITES,
    *,
    previous: NegotiatedSrtp | None = None,
) -> tuple[CryptoAttribute, NegotiatedSrtp] | None:
    """The answerer's choice (RFC 4568 §7.1.2): the first offered line we can use.

    The answer line has the offer's tag and suite and *our own* key: fresh, or the one
    of ``previous`` when the re-offer keeps the same tag and suite (RFC 4568 §7.1.4
    lets a re-answer keep its key, which keeps our outbound SRTP stream going). None if
    no offered line is usable with ``suites``.
    """
    for line in offered:
        if isinstance(line, CryptoAttribute) and line.suite in suites:
            if previous is not None and (previous.tag, previous.suite) == (line.tag, line.suite):
                local = previous.local
            else:
                local = SrtpKeys.generate(line.suite)
            ours = CryptoAttribute(line.tag, local)
            return ours, NegotiatedSrtp(line.tag, local, line.keys)
    return None


class SrtpPolicy(enum.StrEnum):
    """The ``srtp`` setting (``SimplePeer.create(srtp=...)``, the daemon's ``media.srtp``).

    ``off``: plain RTP only. ``required``: SRTP or no call (RTP/SAVP offers, 488 to an
    offer without a usable key). ``optional``: best effort, as common PBXs do: offer
    RTP/AVP *with* ``a=crypto`` lines, use SRTP whenever the other side gives a key.
    """

    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"

    @classmethod
    def parse(cls, value: str | SrtpPolicy) -> SrtpPolicy:
        """The policy named ``value``; :class:`SipdValueError` names the three choices."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise SipdValueError(
                f"srtp must be 'off', 'optional' or 'required', got {value!r}"
            ) from None


class SrtpAction(enum.StrEnum):
    """What to do with one audio stream: encrypt it, carry it in the clear, or refuse."""

    SRTP = "srtp"
    PLAIN = "plain"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class SrtpOffer:
    """What our offer's audio ``m=`` line carries under a policy: its proto and our
    ``a=crypto`` lines (with our keys: keep this object to read the answer)."""

    policy: SrtpPolicy
    proto: str
    crypto: tuple[CryptoAttribute, ...] = ()

    def attributes(self) -> list[Attribute]:
        return [line.to_attribute() for line in self.crypto]

    def apply(self, media: MediaDescription) -> None:
        """Set ``media``'s proto and add our crypto lines (replacing any there were)."""
        _set_crypto(media, self.proto, self.attributes())


@dataclass(frozen=True, slots=True)
class SrtpDecision:
    """The outcome for one audio stream of a peer's offer or answer.

    ``action`` SRTP: build an SRTP context from ``keys``; PLAIN: plain RTP; REFUSE:
    answer the offer with 488 (or reject the stream with port 0), or end the call whose
    answer this was. ``proto`` and ``crypto`` are what our answer's ``m=`` line gets
    (None on the offerer's side and on refusal). ``reason`` says why, for the log.
    """

    action: SrtpAction
    reason: str
    proto: str | None = None
    crypto: CryptoAttribute | None = None
    keys: NegotiatedSrtp | None = None

    @property
    def secure(self) -> bool:
        return self.action is SrtpAction.SRTP

    @property
    def refused(self) -> bool:
        return self.action is SrtpAction.REFUSE

    def attributes(self) -> list[Attribute]:
        """Our answer's ``a=crypto`` attribute, if we answer with one."""
        return [] if self.crypto is None else [self.crypto.to_attribute()]

    def apply(self, media: MediaDescription) -> None:
        """Give our answer's ``media`` the decided proto and crypto line."""
        _set_crypto(media, self.proto, self.attributes())

    def error(self) -> SrtpNegotiationError:
        """The 488 error for a refusal (RFC 3261 §21.4.26), with ``reason`` as message."""
        return SrtpNegotiationError(self.reason)


def _set_crypto(media: MediaDescription, proto: str | None, crypto: list[Attribute]) -> None:
    if proto is not None:
        media.proto = proto
    media.attributes = [a for a in media.attributes if a.name != "crypto"] + crypto


def offer_srtp(
    policy: SrtpPolicy | str, suites: Sequence[SrtpSuite] = SUPPORTED_SUITES
) -> SrtpOffer:
    """What to put in our offer (RFC 4568 §7.1.1): ``off``: RTP/AVP and no crypto;
    ``required``: RTP/SAVP with one crypto line per suite; ``optional``: RTP/AVP with
    those crypto lines (best effort SRTP). Each line gets its own fresh key; tags
    count from 1 in ``suites`` order (our preference)."""
    policy = SrtpPolicy.parse(policy)
    if policy is SrtpPolicy.OFF:
        return SrtpOffer(policy, RTP_AVP)
    if not suites:
        raise SipdValueError("an SRTP offer needs at least one crypto suite")
    lines = tuple(
        CryptoAttribute(tag, SrtpKeys.generate(suite)) for tag, suite in enumerate(suites, 1)
    )
    proto = RTP_SAVP if policy is SrtpPolicy.REQUIRED else RTP_AVP
    return SrtpOffer(policy, proto, lines)


def _why_unusable(lines: Sequence[CryptoAttribute | UnusableCrypto]) -> str:
    """Why no line of an offer was usable, completing "the offer ..."."""
    bad = next((line for line in lines if isinstance(line, UnusableCrypto)), None)
    if bad is None:
        return "offers no crypto suite we support" if lines else "has no a=crypto line"
    which = "a crypto line" if bad.tag is None else f"crypto line {bad.tag}"
    return f"has no usable key ({which}: {bad.reason})"


def answer_srtp(
    policy: SrtpPolicy | str,
    offered: MediaDescription,
    *,
    suites: Sequence[SrtpSuite] = SUPPORTED_SUITES,
    previous: NegotiatedSrtp | None = None,
) -> SrtpDecision:
    """Decide on a peer's offered audio stream under ``policy`` (answerer, RFC 4568 §7.1.2).

    =========  ===============================  ================================
    policy     RTP/SAVP offer                   RTP/AVP offer
    =========  ===============================  ================================
    off        refuse                           plain (its crypto lines ignored)
    optional   SRTP; refuse without usable key  SRTP with a usable key, else plain
    required   SRTP; refuse without usable key  SRTP with a usable key, else refuse
    =========  ===============================  ================================

    The answer keeps the offer's proto (RFC 3264 §6), so a best-effort RTP/AVP offer
    with crypto gets an RTP/AVP answer with our crypto line. Other protos (RTP/SAVPF,
    DTLS-SRTP's UDP/TLS/RTP/SAVP, ...) are refused. ``previous`` lets a re-answer keep
    our key (see :func:`select_crypto`).
    """
    policy = SrtpPolicy.parse(policy)
    proto = offered.proto.upper()
    if proto not in (RTP_AVP, RTP_SAVP):
        return _refuse(
            f"the offer's transport {offered.proto} is not supported (sipd speaks "
            f"{RTP_AVP} and {RTP_SAVP} with SDES keys)"
        )
    if policy is SrtpPolicy.OFF:
        if proto == RTP_SAVP:
            return _refuse("the offer requires SRTP (RTP/SAVP) and srtp is 'off'")
        return SrtpDecision(SrtpAction.PLAIN, "srtp is 'off'", proto=RTP_AVP)
    lines = crypto_attributes(offered)
    chosen = select_crypto(lines, suites, previous=previous)
    if chosen is not None:
        ours, keys = chosen
        reason = f"SRTP {keys.suite} (crypto tag {keys.tag}) over {proto}"
        return SrtpDecision(SrtpAction.SRTP, reason, proto=proto, crypto=ours, keys=keys)
    why = _why_unusable(lines)
    if proto == RTP_SAVP:
        return _refuse(f"the RTP/SAVP (SRTP) offer {why}")
    if policy is SrtpPolicy.REQUIRED:
        return _refuse(f"srtp is 'required' but the offer {why}")
    return SrtpDecision(SrtpAction.PLAIN, f"plain RTP: the offer {why}", proto=RTP_AVP)


def process_srtp_answer(offer: SrtpOffer, answer: MediaDescription) -> SrtpDecision:
    """Read the peer's answer to our :class:`SrtpOffer` (offerer, RFC 4568 §7.1.3).

    The answer's first ``a=crypto`` line must carry a tag we offered, with the same
    suite, and a key we can use; the peer sends with that key. A crypto answer over
    RTP/AVP or RTP/SAVP is accepted whatever we offered (some peers answer a
    best-effort RTP/AVP offer with RTP/SAVP). Without a crypto line: plain RTP if we
    offered RTP/AVP and srtp is not 'required'; else refused. A refused answer means
    the call cannot carry media: end it (ACK, then BYE).
    """
    proto = answer.proto.upper()
    if proto not in (RTP_AVP, RTP_SAVP):
        return _refuse(f"the answer's transport {answer.proto} is not supported")
    if offer.policy is SrtpPolicy.OFF or not offer.crypto:
        if proto == RTP_SAVP:
            return _refuse("the answer uses SRTP (RTP/SAVP), which srtp='off' did not offer")
        return SrtpDecision(SrtpAction.PLAIN, "srtp is 'off'")
    lines = crypto_attributes(answer)
    if not lines:
        if proto == RTP_SAVP or offer.policy is SrtpPolicy.REQUIRED:
            return _refuse(f"the {proto} answer has no a=crypto line (srtp='{offer.policy}')")
        return SrtpDecision(SrtpAction.PLAIN, "plain RTP: the answer has no a=crypto line")
    line = lines[0]
    if isinstance(line, UnusableCrypto):
        return _refuse(f"the answer's crypto line is unusable: {line.reason}")
    ours = next((o for o in offer.crypto if o.tag == line.tag), None)
    if ours is None:
        return _refuse(
            f"the answer's crypto tag {line.tag} is not one we offered (RFC 4568 §7.1.3)"
        )
    if ours.suite is not line.suite:
        return _refuse(
            f"the answer's crypto tag {line.tag} names {line.suite}, we offered {ours.suite}"
            " (RFC 4568 §7.1.3)"
        )
    keys = NegotiatedSrtp(line.tag, ours.keys, line.keys)
    return SrtpDecision(
        SrtpAction.SRTP, f"SRTP {keys.suite} (crypto tag {keys.tag}) over {proto}", keys=keys
    )


def _refuse(reason: str) -> SrtpDecision:
    return SrtpDecision(SrtpAction.REFUSE, reason)
