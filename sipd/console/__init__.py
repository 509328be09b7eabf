"""The operator's console: per-call SIP ladders, state paths, quality graphs and captures.

:mod:`sipd.console.recorder` is the sans-I/O core (what is kept per call,
and how much); :mod:`sipd.console.live` connects it to a coordinator;
:mod:`sipd.console.web` serves it over twisted.web (see docs/console.md).
"""
