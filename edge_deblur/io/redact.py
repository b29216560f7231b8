"""Keep credentials out of everything that is printed, logged or serialized.

``rtsp://user:secret@cam/stream`` becomes ``rtsp://user:***@cam/stream``; a user name alone
(``rtsp://token@host``) is treated as a secret too (``rtsp://***@host``), and so are query
parameters such as ``?password=``, ``?token=``, ``?key=``, ``?sig=``, and GStreamer properties
such as ``user-pw=``. ``redact`` works on any
text (an error message, a GStreamer pipeline with ``location=rtsp://...``), so it is applied to
source URIs when they are described and, as a last net, to every log record of the package and
every error message the CLI prints.
"""
from __future__ import annotations

import logging
import re

# the password may hold '@' (FFmpeg splits the user info at the last '@' before the host, as here)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:?#'\"]*)(?::(?P<pw>[^\s/?#'\"]*))?@")
# GStreamer element properties (rtspsrc user-pw=..., souphttpsrc user-pw / proxy-pw)
_SECRET_PROPS = re.compile(r"(?P<key>\b(?:user-pw|proxy-pw|passwd|password)\s*=\s*)(?P<val>\"[^\"]*\"|'[^']*'|[^\s!]+)", re.I)
_SECRET_PARAMS = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|pass|token|access_token|auth|key|apikey|api_key|secret|sig|signature)=)"
    r"(?P<val>[^&\s#'\"]+)", re.I)
MASK = "***"


def _userinfo(m: re.Match) -> str:
    if m.group("pw") is not None:
        return f"{m.group('scheme')}{m.group('user')}:{MASK}@"
    return f"{m.group('scheme')}{MASK}@"


def redact(text) -> str:
    """``text`` with credentials in any URI inside it replaced by ``***``."""
    if text is None:
        return text
    s = str(text)
    if "@" in s:
        s = _USERINFO.sub(_userinfo, s)
    if "=" in s:
        s = _SECRET_PARAMS.sub(lambda m: m.group("key") + MASK, s)
        s = _SECRET_PROPS.sub(lambda m: m.group("key") + MASK, s)
    return s


def has_secret(text) -> bool:
    return text is not None and redact(text) != str(text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's business
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (default: the root logger), where records
    of all child loggers pass (idempotent)."""
    for h in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
