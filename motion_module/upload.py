"""Upload saved outputs to S3 or any S3-compatible server (MinIO, Ceph, moto...) with boto3.

boto3 is optional: it is imported inside ``upload_s3`` only, so the engine works without it, and a
missing boto3 is an ``OutputError`` saying how to install it. Uploads never touch
the local files; every failure becomes an ``OutputError`` whose message says what to check.
Keys are ``<prefix>/<file name>``; a PNG frame folder becomes ``<prefix>/<folder>/<frame>.png``.
URLs are path-style: ``<endpoint>/<bucket>/<key>``.
"""

from __future__ import annotations

import math
import mimetypes
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from .errors import OutputError, ParameterError

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden",
               "InvalidClientTokenId", "InvalidToken", "ExpiredToken"}
_MISSING_BUCKET = {"404", "NoSuchBucket", "NotFound"}
# boto3 is optional (only S3 upload needs it); the interpreter named is the one running (WebUI's venv inside WebUI)
MISSING_BOTO3 = (f"S3 upload needs the boto3 package, which is not installed: run `{sys.executable} -m pip "
                 "install boto3`, then restart WebUI (or turn S3 upload off in Settings > AnimateDiff). "
                 "The local files are kept.")


@dataclass(frozen=True)
class S3Options:
    """Where to upload. ``endpoint``: http(s)://host[:port]; ``region`` None = us-east-1;
    ``access_key``/``secret_key`` None = boto3's usual lookup (environment, ~/.aws).
    ``connect_timeout`` seconds and ``max_attempts`` (>= 1, first try included) bound the wait."""

    endpoint: str
    bucket: str
    region: str | None = None
    prefix: str = ""
    access_key: str | None = None
    secret_key: str | None = None
    connect_timeout: float = 5.0
    max_attempts: int = 2

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint) if isinstance(self.endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ParameterError("s3_endpoint", f"{self.endpoint!r} is not an http:// or https:// "
                                 "URL; write e.g. http://127.0.0.1:9000 or https://s3.amazonaws.com.")
        if not isinstance(self.bucket, str) or not _BUCKET.fullmatch(self.bucket):
            raise ParameterError("s3_bucket", f"{self.bucket!r} is not a valid bucket name: "
                                 "use 3-63 lower-case letters, digits, '.' and '-'.")
        segments = str(self.prefix).replace("\\", "/").split("/")
        if any(seg in (".", "..") for seg in segments):
            raise ParameterError("s3_prefix", f"{self.prefix!r} may not contain '.' or '..' parts.")
        if (self.access_key is None) != (self.secret_key is None):
            raise ParameterError("s3_access_key", "set both the access key and the secret key, or "
                                 "neither (then boto3 reads the environment / ~/.aws).")
        timeout = self.connect_timeout
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ParameterError("s3_connect_timeout", "must be a number of seconds above 0.")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or not 1 <= self.max_attempts <= 10:
            raise ParameterError("s3_max_attempts", "must be an integer from 1 to 10.")

    @property
    def key_prefix(self) -> str:
        """The prefix without empty parts, ending in '/' unless empty."""
        parts = [p for p in str(self.prefix).replace("\\", "/").split("/") if p]
        return "".join(p + "/" for p in parts)


def _files_and_keys(paths: Iterable[Path | str], prefix: str) -> list[tuple[Path, str]]:
    items: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                items.append((child, prefix + path.name + "/" + child.relative_to(path).as_posix()))
        elif path.is_file():
            items.append((path, prefix + path.name))
        else:
            raise OutputError(f"cannot upload {path}: no such file or folder.")
    return items


def _explain(exc: Exception, options: S3Options, action: str) -> OutputError:
    """Turn a boto3/botocore exception into an OutputError that says what to check."""
    from botocore import exceptions as bce

    where = f"{options.endpoint} (bucket {options.bucket!r})"
    tail = " The local files are kept."
    if isinstance(exc, bce.SSLError):
        return OutputError(f"TLS failed while talking to {where}: {exc}. Use http:// for a server "
                           "without TLS, or fix its certificate." + tail)
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError,
                        bce.ReadTimeoutError, bce.ConnectionClosedError)):
        return OutputError(f"cannot reach the S3 endpoint {options.endpoint} ({exc}). Check the "
                           "host, the port and http/https, and that the server is running." + tail)
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return OutputError("no S3 credentials: set the access key and secret key in the "
                           "AnimateDiff S3 settings." + tail)
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), error.get("Message", "") or str(exc)
        if code in _AUTH_CODES:
            return OutputError(f"S3 at {where} rejected the credentials while trying to {action} "
                               f"({code}: {message}). Check the access key, the secret key and "
                               "the bucket permissions." + tail)
        return OutputError(f"S3 at {where} refused to {action} ({code}: {message})." + tail)
    return OutputError(f"S3 upload to {where} failed while trying to {action}: {exc}." + tail)


def _client(options: S3Options) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise OutputError(MISSING_BOTO3) from None
    config = Config(connect_timeout=options.connect_timeout, read_timeout=60,
                    retries={"max_attempts": options.max_attempts, "mode": "standard"},
                    s3={"addressing_style": "path"})
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=options.endpoint,
                          region_name=options.region or "us-east-1",
                          aws_access_key_id=options.access_key,
                          aws_secret_access_key=options.secret_key, config=config)


def _ensure_bucket(client: Any, options: S3Options) -> None:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=options.bucket)
        return
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) not in _MISSING_BUCKET:
            raise
    kwargs: dict[str, Any] = {"Bucket": options.bucket}
    if options.region and options.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": options.region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


def upload_s3(paths: Iterable[Path | str], options: S3Options) -> list[str]:
    """Upload files (and PNG frame folders) to ``options.bucket``, creating it if missing.

    Returns one path-style URL per uploaded file, in order. Raises ``OutputError`` on any failure.
    """
    items = _files_and_keys(paths, options.key_prefix)
    client = _client(options)
    action = f"check or create the bucket {options.bucket!r}"
    try:
        _ensure_bucket(client, options)
        urls = []
        for path, key in items:
            action = f"upload {path.name} as {key!r}"
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            with open(path, "rb") as body:
                client.put_object(Bucket=options.bucket, Key=key, Body=body,
                                  ContentType=content_type)
            urls.append(f"{options.endpoint.rstrip('/')}/{options.bucket}/{quote(key)}")
    except Exception as exc:  # botocore's exception tree is wide; _explain sorts it
        local = isinstance(exc, OSError) and not type(exc).__module__.startswith(
            ("botocore", "urllib3", "s3transfer"))
        if local:
            filename = getattr(exc, "filename", None) or "a local file"
            raise OutputError(f"cannot read {filename} for the upload: "
                              f"{exc}.") from exc
        raise _explain(exc, options, action) from exc
    finally:
        client.close()
    return urls
