"""Store URLs: which object store a root names, the obstore client for it, and redaction.

A :class:`~gds_zarr.GDSStore` root is a local path or one of these URLs:

==========================  =====================================================
URL                         object store (obstore class)
==========================  =====================================================
``s3://bucket/prefix``      Amazon S3 or any S3-compatible server (``S3Store``)
``gs://bucket/prefix``      Google Cloud Storage (``GCSStore``)
``az://container/prefix``   Azure Blob Storage (``AzureStore``)
``http(s)://host/path``     any HTTP server answering ``Range`` requests (``HTTPStore``)
==========================  =====================================================

Configuration comes, in order, from the ``storage_options`` mapping, then from the usual
environment variables that obstore reads itself (``AWS_*`` including ``AWS_ENDPOINT_URL``,
``GOOGLE_*``, ``AZURE_*``). Three conveniences on top of obstore:

* an ``http://`` endpoint (a server on loopback, a lab's S3-compatible store) needs no
  ``allow_http`` flag: the URL already says plain HTTP is wanted;
* an S3 or GCS store with no credentials configured anywhere is read anonymously (public
  buckets), instead of waiting for a cloud metadata service that is not there; pass
  ``anon=False`` to insist on signing (an EC2 instance role), ``anon=True`` to never sign;
* retries and timeouts follow the ``remote_retries`` and ``remote_timeout`` settings.

Credentials never leave this module in text: :class:`Redactor` removes every configured secret
value, URL user-info and query strings from messages, and the store's ``repr`` shows only the
URL without them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gds_zarr import settings

__all__ = ["SCHEMES", "Redactor", "RemoteLocation", "is_url", "parse_url"]

#: URL scheme -> the kind of object store it names.
SCHEMES: Mapping[str, str] = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "azure": "azure",
    "abfs": "azure", "abfss": "azure", "http": "http", "https": "http",
}

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Option and environment names whose values are secrets (an access key id included: it names
# the account and is half of a credential).
_SECRET_NAME = re.compile(r"secret|token|password|passwd|key|sas|credential|signature|auth",
                          re.IGNORECASE)
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")
_USERINFO = re.compile(r"(://)[^/@\s\"'<>]+@")
_QUERY = re.compile(r"(https?://[^\s?\"'<>]*)\?[^\s\"'<>]*")
_CREDENTIAL_ENV = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
           "AWS_PROFILE"),
    "gcs": ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_APPLICATION_CREDENTIALS"),
}
_CREDENTIAL_OPTIONS = {
    "s3": ("access_key_id", "aws_access_key_id", "secret_access_key", "session_token", "token",
           "web_identity_token_file", "role_arn"),
    "gcs": ("service_account", "service_account_path", "service_account_key",
            "application_credentials", "google_service_account"),
}


def is_url(root: object) -> bool:
    """Whether ``root`` is a remote URL string (``scheme://...``, not ``file://``) rather than
    a local path."""
    return (isinstance(root, str) and _SCHEME_RE.match(root) is not None
            and not root.lower().startswith("file://"))


class Redactor:
    """Removes secrets from text: configured secret values, URL user-info, query strings.

    Parameters
    ----------
    secrets
        Values to replace by ``***`` wherever they appear (shorter than 4 characters: ignored,
        they would mangle ordinary words).
    """

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        # Longest first, so a secret containing another is removed whole.
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        text = _USERINFO.sub(r"\1***@", text)
        return _QUERY.sub(r"\1?***", text)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"  # never the secrets themselves


def _secret_values(options: Mapping[str, Any]) -> tuple[str, ...]:
    """Every secret-looking value in ``options`` (nested mappings included) and the
    environment."""
    out: list[str] = []

    def walk(m: Mapping[str, Any]) -> None:
        for k, v in m.items():
            if isinstance(v, Mapping):
                walk(v)
            elif isinstance(v, str) and _SECRET_NAME.search(str(k)):
                out.append(v)

    walk(options)
    out += [v for k, v in os.environ.items()
            if k.startswith(_ENV_PREFIXES) and _SECRET_NAME.search(k) and v]
    return tuple(out)


@dataclass(frozen=True)
class RemoteLocation:
    """Where a remote store's objects live, and how to reach them.

    Attributes
    ----------
    kind
        ``"s3"``, ``"gcs"``, ``"azure"`` or ``"http"``.
    url
        The root URL as shown to users: no user-info, no query string, no trailing ``/``.
    bucket
        The bucket or container (for HTTP: ``""``).
    prefix
        The path of the root inside the bucket (or under the HTTP base URL), no ``/`` at
        either end; object paths are ``prefix/key``.
    base
        For HTTP, the server URL the store is built on (scheme, host, port); else ``""``.
    options
        The ``storage_options`` as given (held here only, never printed).
    """

    kind: str
    url: str
    bucket: str
    prefix: str
    base: str = ""
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def path(self, key: str) -> str:
        """The object path of a store key (already checked by the store)."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def key(self, path: str) -> str:
        """The store key of an object path under the prefix (inverse of :meth:`path`)."""
        return path[len(self.prefix) + 1:] if self.prefix else path

    def object_url(self, path: str) -> str:
        """The URL of one object, for messages (the form users wrote, never signed)."""
        if self.kind == "http":
            return f"{self.base}/{path}"
        scheme = self.url.split("://", 1)[0]
        return f"{scheme}://{self.bucket}/{path}"

    def redactor(self) -> Redactor:
        return Redactor(_secret_values(self.options))

    def endpoint(self) -> str | None:
        """The S3 endpoint configured in the options or the environment, if any."""
        if self.kind != "s3":
            return None
        for k in ("endpoint", "endpoint_url", "aws_endpoint", "aws_endpoint_url"):
            v = self.options.get(k)
            if isinstance(v, str) and v:
                return v
        return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or None

    def anonymous(self) -> bool:
        """Whether requests go unsigned (see the module docstring)."""
        anon = self.options.get("anon")
        if anon is not None:
            return bool(anon)
        if self.kind not in _CREDENTIAL_ENV:
            return False
        if any(self.options.get(k) for k in _CREDENTIAL_OPTIONS[self.kind]):
            return False
        return not any(os.environ.get(k) for k in _CREDENTIAL_ENV[self.kind])

    def build(self) -> Any:
        """The obstore store for this location (the environment is read now).

        Raises
        ------
        ImportError
            If obstore is not installed (the ``remote`` extra).
        """
        store = _obstore_store_module()
        opts = {k: v for k, v in self.options.items() if not k.startswith("_")
                and k not in ("anon", "client_options", "retry_config", "endpoint_url")}
        client: dict[str, Any] = {"timeout": timedelta(seconds=settings.get("remote_timeout")),
                                  "connect_timeout": timedelta(seconds=10)}
        endpoint = self.endpoint()
        if self.kind == "s3" and "endpoint_url" in self.options:
            opts["endpoint"] = self.options["endpoint_url"]
        if (self.kind == "http" and self.base.startswith("http://")) or (
                endpoint is not None and endpoint.startswith("http://")):
            client["allow_http"] = True  # the URL asks for plain HTTP: no extra flag needed
        client.update(self.options.get("client_options") or {})
        retries = int(settings.get("remote_retries"))
        timeout = float(settings.get("remote_timeout"))
        retry: dict[str, Any] = {
            "max_retries": retries,
            "backoff": {"init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=2), "base": 2},
            # No retry starts later than this after the first attempt: bounded, never a hang.
            "retry_timeout": timedelta(seconds=(retries + 1) * (timeout + 2)),
        }
        retry.update(self.options.get("retry_config") or {})
        if self.kind in ("s3", "gcs") and self.anonymous():
            opts.setdefault("skip_signature", True)
        common = {"client_options": client, "retry_config": retry}
        if self.kind == "s3":
            return store.S3Store(self.bucket, **common, **opts)
        if self.kind == "gcs":
            return store.GCSStore(self.bucket, **common, **opts)
        if self.kind == "azure":
            return store.AzureStore(self.bucket, **common, **opts)
        base = self.base
        userinfo = self.options.get("_http_password")
        if userinfo:
            scheme, rest = base.split("://", 1)
            base = f"{scheme}://{userinfo}@{rest}"
        return store.HTTPStore.from_url(base, **common)


def _obstore_store_module() -> Any:
    try:
        import obstore.store
    except ImportError as e:
        raise ImportError(
            "gds_zarr reads s3://, gs://, az:// and http(s):// URLs through obstore, a "
            "dependency of gds-zarr that is missing here: pip install 'obstore>=0.8'") from e
    return obstore.store


def parse_url(root: str, storage_options: Mapping[str, Any] | None = None) -> RemoteLocation:
    """Parse a store URL (see the module docstring) into a :class:`RemoteLocation`.

    Raises
    ------
    ValueError
        An unsupported scheme, a URL without bucket or host, or one with ``..`` components.
    TypeError
        ``storage_options`` that is not a mapping with str keys.
    """
    options = dict(storage_options or {})
    if not all(isinstance(k, str) for k in options):
        raise TypeError("storage_options keys must be str")
    parts = urlsplit(root)
    scheme = parts.scheme.lower()
    kind = SCHEMES.get(scheme)
    if kind is None:
        raise ValueError(f"unsupported store URL scheme {scheme!r} in {Redactor()(root)!r}; "
                         f"supported: {', '.join(sorted(SCHEMES))} or a local path")
    host = parts.hostname or ""
    path = parts.path.strip("/")
    if any(c in ("..", ".") for c in path.split("/")):
        raise ValueError(f"a store URL must not contain '.' or '..' components, got "
                         f"{Redactor()(root)!r}")
    if kind == "http":
        if not host:
            raise ValueError(f"an HTTP store URL needs a host, got {Redactor()(root)!r}")
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        if ":" in host:
            netloc = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
        if parts.username or parts.password:
            # obstore's HTTPStore takes credentials only in the URL: the client gets them, the
            # displayed URL does not (the option's name makes the Redactor remove them too).
            options["_http_password"] = parts.netloc.rsplit("@", 1)[0]
        base = urlunsplit((scheme, netloc, "", "", ""))
        url = f"{base}/{path}" if path else base
        return RemoteLocation(kind, url, "", path, base=base, options=options)
    if kind == "azure" and "@" in parts.netloc:  # abfs[s]://container@account.dfs...
        container, _, account_host = parts.netloc.partition("@")
        options.setdefault("account_name", account_host.split(".", 1)[0])
        host = container
    if not host:
        raise ValueError(f"a {scheme}:// URL needs a bucket or container, got "
                         f"{Redactor()(root)!r}")
    url = f"{scheme}://{host}/{path}" if path else f"{scheme}://{host}"
    return RemoteLocation(kind, url, host, path, options=options)
