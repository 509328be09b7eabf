"""The built-in signalling handlers, as plugins the daemon finds by name."""

from sipd.handlers import echo, ivr, queue, reject, stream
from sipd.handlers.base import HandlerFactory

echo_handler = HandlerFactory("echo", echo.build, "answer and echo the caller's audio")
ivr_handler = HandlerFactory("ivr", ivr.build, "prompt, DTMF menu, message after the tone")
reject_handler = HandlerFactory("reject", reject.build, "answer every INVITE with a status")
queue_handler = HandlerFactory("queue", queue.build, "call-centre queue bridging callers to agents")
stream_handler = HandlerFactory("stream", stream.build, "bridge each call to a WebSocket voice bot")
