"""Packaging for sipd.

setuptools installs the ``sipd`` package and, once the daemon lands, the
``twisted/plugins/sipd_plugin.py`` drop-in (that folder has no ``__init__.py``
on purpose: Twisted scans it as a plugin directory, not as a package).
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="sipd",
    version="0.1.0",
    description="SIP telephony library and daemon on Twisted: real calls, real RTP audio",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py: listing it here (as Twisted's plugin
    # docs say) installs the drop-in files next to Twisted's own plugins.
    packages=[*find_packages(include=["sipd", "sipd.*"]), "twisted.plugins"],
    package_data={
        "sipd": ["py.typed", "data/*.yaml"],
        "twisted": ["plugins/sipd_plugin.py", "plugins/sipd_handlers.py"],
    },
    # Lower bounds are the versions the suite was run with (`make test`).
    install_requires=[
        "twisted>=26.10",
        "zope.interface>=8.7",
        "automat>=25.4.16",
        "numpy>=2.4",
        "pyyaml>=6.0.4",
        # SIP over TLS (Twisted's TLS needs both), SRTP (libsrtp's binding).
        "pyopenssl>=26.4",
        "service_identity>=26.1",
        "pylibsrtp>=1.0",
        # Wideband audio: resampling, G.722, Opus (on Debian's libopus0).
        "soxr>=1.0",
        "g722>=1.2.8",
        "opuslib-next>=1.3.1",
        # Voice bots: the WebSocket client (and the tests' bot server).
        "autobahn>=26.11",
        # /metrics: the exposition, process and GC metrics.
        "prometheus_client>=0.26",
    ],
    extras_require={
        "test": [
            "pytest>=9.2",
            # The tests make their own CA and certificates.
            "cryptography>=50.0",
            "pytest-twisted>=1.14.3",
            "hypothesis>=6.170",
            "ruff>=0.17.6",
            "mypy>=2.4",
            "mypy-zope>=1.0.17",
            "types-pyyaml>=6.0.12",
            # G.711 oracle: stdlib audioop up to 3.12, audioop-lts after.
            "audioop-lts>=0.2; python_version>='3.13'",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3.11",
        "Topic :: Communications :: Telephony",
    ],
)
