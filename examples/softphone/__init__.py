"""A softphone: a WAV file is the microphone, another WAV file the speaker.

See ``__main__.py``; run ``python -m examples.softphone --help``.
"""
