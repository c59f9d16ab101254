"""Host checks shared by every outbound request Job Center makes.

Pure Python like the rest of `providers/`: the account services (where credentials may
go) and the alert webhooks (where alerts may go) both ask it, and neither imports the
other.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether `host` (a URL's lower-cased hostname) names this machine.

    Loopback targets are the sandbox and local receivers: allowed in development only.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
