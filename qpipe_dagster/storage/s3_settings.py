"""Where an S3-compatible bucket is and how to sign in: parsed once for every qpipe use of S3.

Backups (`BACKUP_URL`, `BACKUP_S3_*`) and asset tables (`QPIPE_ASSET_URL`, `QPIPE_ASSET_S3_*`)
read the same shape of settings, each with its own variable prefix, so a bucket is configured
the same way wherever qpipe stores something. `r2://bucket/prefix` is Cloudflare R2 through the
account-wide R2_ACCOUNT_ID / R2_KEY / R2_SECRET.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from qpipe_dagster.settings import S3_SCHEMES, SettingError, env_value


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str  # without leading or trailing '/'
    endpoint_url: str | None = None  # None: AWS itself
    access_key: str | None = None  # None: the AWS default credential chain (AWS_* variables, ...)
    secret_key: str | None = None
    region: str | None = None

    def printable(self) -> str:
        """The location without credentials, for messages and metadata."""
        at = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{at}"

    def fsspec_options(self) -> dict[str, Any]:
        """Keyword arguments for s3fs.S3FileSystem (and so UPath) naming the same bucket."""
        options: dict[str, Any] = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.access_key:
            options["key"] = self.access_key
        if self.secret_key:
            options["secret"] = self.secret_key
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        return options


def s3_settings_from_url(
    url: str, env: Mapping[str, str], *, var_prefix: str, what: str
) -> S3Settings:
    """`s3://bucket/prefix` (endpoint, key, secret, region from `<var_prefix>ENDPOINT`, `KEY`,
    `SECRET`, `REGION`) or `r2://bucket/prefix` (R2_ACCOUNT_ID, R2_KEY, R2_SECRET).

    `what` names the setting in errors ("backup target", "QPIPE_ASSET_URL"); a URL or variables
    that cannot name a bucket raise SettingError saying which and how to fix.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in S3_SCHEMES:
        raise SettingError(
            f"{what} {url!r}: unsupported scheme {parts.scheme!r}; use s3://bucket/prefix or "
            "r2://bucket/prefix"
        )
    if not parts.netloc:
        raise SettingError(f"{what} {url!r} names no bucket")
    prefix = parts.path.strip("/")
    if parts.scheme == "r2":
        missing = [v for v in ("R2_ACCOUNT_ID", "R2_KEY", "R2_SECRET") if not env_value(v, env)]
        if missing:
            raise SettingError(f"{what} {url!r} needs {', '.join(missing)} to be set")
        return S3Settings(
            parts.netloc,
            prefix,
            endpoint_url=f"https://{env_value('R2_ACCOUNT_ID', env)}.r2.cloudflarestorage.com",
            access_key=env_value("R2_KEY", env),
            secret_key=env_value("R2_SECRET", env),
            region="auto",
        )
    return S3Settings(
        parts.netloc,
        prefix,
        endpoint_url=env_value(f"{var_prefix}ENDPOINT", env),
        access_key=env_value(f"{var_prefix}KEY", env),
        secret_key=env_value(f"{var_prefix}SECRET", env),
        region=env_value(f"{var_prefix}REGION", env),
    )
