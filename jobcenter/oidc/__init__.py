"""Sign-in with the company's identity provider (OpenID Connect), by mozilla-django-oidc.

Optional: on when `JOBCENTER_OIDC_ISSUER` is set (docs/configuration.md#sign-in-with-openid-connect).

- `config`: the provider's endpoints, read from its discovery document once per process;
- `mapping`: the identity provider's groups turned into staff, superuser, teams and
  permission groups, applied on every sign-in;
- `backends`: the authentication backend that checks the claims (verified email, allowed
  domain, a mapped group) and the gate that turns password logins off but for the
  break-glass superusers;
- `views`: the sign-in, callback and sign-out views, and the middleware that asks the
  identity provider again when a sign-in is older than `JOBCENTER_OIDC_RECHECK_SECONDS`.
"""
