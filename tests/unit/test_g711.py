"""G.711 against the audioop reference on every possible input."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from sipd.errors import MediaValueError, SipdError
from sipd.media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    if sys.version_info >= (3, 13):
        import audioop_lts as audioop  # pragma: no cover
    else:
        import audioop

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_audioop_on_every_int16_sample() -> None:
    """µ-law encoding is bit-exact with audioop.lin2ulaw for all 65,536 inputs."""
    expected = audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    assert g711.ulaw_encode(ALL_SAMPLES).tobytes() == expected


def test_alaw_encode_matches_audioop_on_every_int16_sample() -> None:
    """A-law encoding is bit-exact with audioop.lin2alaw for all 65,536 inputs."""
    expected = audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)
    assert g711.alaw_encode(ALL_SAMPLES).tobytes() == expected


def test_ulaw_decode_matches_audioop_on_every_code() -> None:
    """µ-law decoding is bit-exact with audioop.ulaw2lin for all 256 codes."""
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.ulaw_decode(ALL_CODES), expected)


def test_alaw_decode_matches_audioop_on_every_code() -> None:
    """A-law decoding is bit-exact with audioop.alaw2lin for all 256 codes."""
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(g711.alaw_decode(ALL_CODES), expected)


def test_encode_and_decode_keep_dtypes_and_lengths() -> None:
    """Encoders give one uint8 per sample; decoders give int16."""
    samples = np.zeros(160, dtype=np.int16)
    assert g711.ulaw_encode(samples).dtype == np.uint8
    assert g711.alaw_encode(samples).shape == (160,)
    assert g711.ulaw_decode(bytes(160)).dtype == np.int16
    assert g711.alaw_decode(np.zeros(160, dtype=np.uint8)).shape == (160,)


def test_non_contiguous_input_is_encoded_like_a_copy() -> None:
    """A strided view encodes the same as its contiguous copy."""
    view = ALL_SAMPLES[::7]
    assert g711.ulaw_encode(view).tobytes() == g711.ulaw_encode(view.copy()).tobytes()


@pytest.mark.parametrize(
    ("name", "encoder", "decoder"),
    [
        ("PCMU", audioop.lin2ulaw, audioop.ulaw2lin),
        ("pcma", audioop.lin2alaw, audioop.alaw2lin),
    ],
)
def test_dispatch_by_codec_name(name: str, encoder: object, decoder: object) -> None:
    """encode/decode pick the law from the RTP codec name, case-insensitively."""
    rng = np.random.default_rng(7)
    samples = rng.integers(-32768, 32768, 160).astype(np.int16)
    payload = g711.encode(name, samples)
    assert isinstance(payload, bytes)
    assert payload == encoder(samples.tobytes(), 2)  # type: ignore[operator]
    expected = np.frombuffer(decoder(payload, 2), dtype=np.int16)  # type: ignore[operator]
    np.testing.assert_array_equal(g711.decode(name, payload), expected)


def test_unknown_codec_is_a_sipd_error() -> None:
    """Asking for a codec sipd does not implement names it in a SipdError."""
    with pytest.raises(SipdError, match="G722"):
        g711.encode("G722", np.zeros(4, dtype=np.int16))
    with pytest.raises(MediaValueError):
        g711.decode("opus", b"\x00")


def test_wider_int_input_is_clipped_before_encoding() -> None:
    """int32 samples beyond the int16 range encode like the clipped values."""
    wide = np.array([40000, -40000, 5], dtype=np.int32)
    clipped = np.array([32767, -32768, 5], dtype=np.int16)
    assert g711.ulaw_encode(wide).tobytes() == g711.ulaw_encode(clipped).tobytes()


def test_payload_types_are_the_static_ones() -> None:
    """PCMU is payload type 0 and PCMA 8 (RFC 3551 table 4)."""
    assert g711.PAYLOAD_TYPES == {"PCMU": 0, "PCMA": 8}
