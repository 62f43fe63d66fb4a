"""Backend URLs as they may be shown: in logs, error messages and answers."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """``scheme://user:***@host/db``: a URL fit for a log line."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL at all (a bad port, brackets): show only its scheme
        return url.split(":", 1)[0] + "://***"
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
