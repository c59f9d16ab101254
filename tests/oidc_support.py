"""A real OpenID provider for the sign-in tests, and a client that signs in through it.

The provider is `tests/oidc/provider.mjs`: the npm package `oidc-provider` (installed by
`make test` into the git-ignored node cache, beside axe-core, or here when missing) on a
free loopback port, with the users of `tests/oidc/users.json`. Without npm (or node) the
tests that need it skip and say so; with npm, a failed install fails them.

`Browserless` walks the authorization-code flow with `requests`, following every redirect
as a browser would: Job Center, the provider's login form, the callback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processes import ROOT, stop

NODE_CACHE = ROOT / ".cache" / "node"
OIDC_PROVIDER_VERSION = "9.13.3"  # the Makefile's OIDC_PROVIDER_VERSION
MODULE = NODE_CACHE / "node_modules" / "oidc-provider" / "lib" / "index.js"
SCRIPT = ROOT / "tests" / "oidc" / "provider.mjs"
USERS = json.loads((ROOT / "tests" / "oidc" / "users.json").read_text())
CLIENT_ID = "job-center"
CLIENT_SECRET = "a-test-client-secret-of-32-chars!"
READY_SECONDS = 30


def ensure_oidc_provider() -> Path:
    """The package's entry point, installed with npm when missing (as `make test` does)."""
    if MODULE.exists() and shutil.which("node"):
        return MODULE
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm (or node) is missing: the OpenID Connect tests need `oidc-provider`")
    result = subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(NODE_CACHE),
         f"oidc-provider@{OIDC_PROVIDER_VERSION}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert MODULE.exists(), f"npm could not install oidc-provider:\n{result.stderr[-2000:]}"
    return MODULE


@dataclass
class IdentityProvider:
    """The running provider: its issuer URL and the process behind it."""

    issuer: str
    process: subprocess.Popen[bytes]

    def set_claims(self, login: str, **claims: Any) -> None:
        """Replace a user's claims at the provider (its groups, say) for later sign-ins."""
        response = requests.post(f"{self.issuer}/_test/users/{login}", json=claims, timeout=10)
        response.raise_for_status()

    def end_sessions(self) -> None:
        """The provider forgets every sign-in, as when its own session expires."""
        requests.post(f"{self.issuer}/_test/end-sessions", timeout=10).raise_for_status()

    def reset_users(self) -> None:
        for login, user in USERS.items():
            self.set_claims(login, **user["claims"])
        self.end_sessions()


def start_provider(site_url: str) -> IdentityProvider:
    """The provider, its one client redirecting to `site_url`'s callback and login page."""
    module = ensure_oidc_provider()
    env = {
        "PATH": str(Path(shutil.which("node") or "node").parent),
        "OIDC_PROVIDER_MODULE": str(module),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_REDIRECT_URIS": f"{site_url}/oidc/callback/",
        "OIDC_LOGOUT_REDIRECT_URIS": f"{site_url}/admin/login/",
    }
    process = subprocess.Popen(
        ["node", str(SCRIPT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        for raw in process.stdout:  # type: ignore[union-attr]
            lines.append(raw.decode(errors="replace"))
            if raw.startswith(b"READY "):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(READY_SECONDS)
    ready = [line for line in lines if line.startswith("READY ")]
    if not ready:
        output = stop(process)
        raise AssertionError(f"the OpenID provider did not start:\n{''.join(lines)}{output}")
    # Keep draining its output, so that a chatty provider never blocks on a full pipe.
    threading.Thread(target=process.stdout.read, daemon=True).start()  # type: ignore[union-attr]
    return IdentityProvider(ready[0].split()[1], process)


FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.IGNORECASE)
HIDDEN = re.compile(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.IGNORECASE)


class Browserless:
    """One visitor, with `requests`: cookies kept, redirects followed, forms posted."""

    def __init__(self, site_url: str) -> None:
        self.site = site_url
        self.http = requests.Session()

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.site + path, timeout=30)

    def sign_in(self, login: str, next_path: str = "/admin/") -> requests.Response:
        """Click the login page's button and sign in at the provider with `login`'s
        password (asked only when the provider has no session). The last answer."""
        page = self.get(f"/admin/login/?next={next_path}")
        button = re.search(r'id="oidc-sign-in" href="([^"]+)"', page.text)
        assert button, "the login page offers no sign-in with the identity provider"
        answer = self.get(unescape(button.group(1)))
        if "/interaction/" in answer.url and 'name="password"' in answer.text:
            action = unescape(FORM.search(answer.text).group(1))  # type: ignore[union-attr]
            password = USERS[login]["password"]
            answer = self.http.post(
                requests.compat.urljoin(answer.url, action),
                data={"login": login, "password": password},
                timeout=30,
            )
        return answer

    def csrf_post(self, path: str, data: dict[str, str] | None = None) -> requests.Response:
        """A form post from one of Job Center's pages (the CSRF cookie and token)."""
        token = self.http.cookies.get("csrftoken") or ""
        return self.http.post(
            self.site + path,
            data={"csrfmiddlewaretoken": token, **(data or {})},
            headers={"Referer": self.site + "/admin/"},
            timeout=30,
        )

    def submit_form(self, answer: requests.Response, **extra: str) -> requests.Response:
        """Post the first form of a page, its hidden fields and `extra`."""
        action = unescape(FORM.search(answer.text).group(1))  # type: ignore[union-attr]
        fields = {name: unescape(value) for name, value in HIDDEN.findall(answer.text)}
        return self.http.post(
            requests.compat.urljoin(answer.url, action), data={**fields, **extra}, timeout=30
        )


def messages_of(answer: requests.Response) -> list[str]:
    """The admin's messages (and error notes) on a page, as text."""
    found = re.findall(r'<li class="(?:error|warning|success|info)">(.*?)</li>', answer.text, re.S)
    return [unescape(re.sub(r"<[^>]+>", "", text)).strip() for text in found]
