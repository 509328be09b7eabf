"""twistd plugin: ``twistd -n sipd --config etc/sipd.yaml``."""

from twisted.application.service import ServiceMaker

sipd = ServiceMaker("sipd", "sipd.tap", "SIP telephony daemon with RTP audio", "sipd")
