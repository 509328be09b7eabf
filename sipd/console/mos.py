"""Estimated MOS from loss, jitter and round-trip time: a simplified ITU-T G.107 E-model.

No listener rates a live call, so the console estimates its quality the way
network monitors do, with the E-model reduced to what RTP statistics give:

- ``R = 93.2 - Id - Ie_eff`` (G.107 §7 with the default values of every
  other parameter: Ro - Is = 93.2, A = 0);
- ``Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)`` (G.107 eq. 7-29,
  random loss: BurstR = 1), with Ie = 0 and Bpl = 25.1 for G.711 with packet
  loss concealment (ITU-T G.113 Appendix I, Table I.3);
- ``Id`` from the one-way delay ``d`` in ms: ``0.024 d + 0.11 (d - 177.3)``
  above 177.3 ms (the fit of Cole and Rosenbluth, "Voice over IP
  performance monitoring", ACM CCR 2001, to G.107's Id curve), with
  ``d`` = half the RTCP round trip + twice the jitter (the jitter buffer) +
  one 20 ms packet;
- ``MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)`` for 0 < R < 100
  (G.107 Annex B, eq. B-4); 1 below, 4.5 above.

So a perfect G.711 call scores 4.40 (R = 93.2 less a little delay), 1 % loss
about 4.32, 5 % loss about 3.90. Other codecs are treated as G.711: the estimate
is for comparing calls and spotting when one went bad, not a rating.
"""

from __future__ import annotations

__all__ = ["estimate_mos", "mos_from_r", "r_factor"]

_BPL = 25.1  # G.711 with PLC, random loss (G.113 Appendix I)
_IE = 0.0


def r_factor(loss_fraction: float, jitter_ms: float = 0.0, rtt_ms: float | None = None) -> float:
    """The transmission rating R for ``loss_fraction`` (0..1), jitter and round trip (ms)."""
    ppl = min(max(loss_fraction, 0.0), 1.0) * 100.0
    delay = (rtt_ms or 0.0) / 2.0 + 2.0 * max(jitter_ms, 0.0) + 20.0
    i_d = 0.024 * delay + (0.11 * (delay - 177.3) if delay > 177.3 else 0.0)
    ie_eff = _IE + (95.0 - _IE) * ppl / (ppl + _BPL)
    return 93.2 - i_d - ie_eff


def mos_from_r(r: float) -> float:
    """G.107 Annex B: the mean opinion score (1..4.5) for a rating R."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


def estimate_mos(
    loss_fraction: float, jitter_ms: float = 0.0, rtt_ms: float | None = None
) -> float:
    """The estimated MOS of a call interval, rounded to two decimals."""
    return round(max(1.0, mos_from_r(r_factor(loss_fraction, jitter_ms, rtt_ms))), 2)
