"""Upload saved outputs to S3 or any S3-compatible server (MinIO, Ceph, moto...) with boto3.

boto3 is optional: it is imported inside ``upload_s3`` only, so the engine works without it, and a
missing boto3 is an ``OutputError`` saying how to install it. Uploads never touch
the local files; every failure becomes an ``OutputError`` whose message says what to check.
Keys are ``<prefix>/<file name>``; a PNG frame folder becomes ``<prefix>/<folder>/<frame>.png``.
URLs are path-style: ``<endpoint>/<bucket>/<key>``.
"""

from __future__ import annotations

import mimetypes
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from motion_module.errors import OutputError
from motion_module.video.output_options import S3Options

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden",
               "InvalidClientTokenId", "InvalidToken", "ExpiredToken"}
_MISSING_BUCKET = {"404", "NoSuchBucket", "NotFound"}
# boto3 is optional (only S3 upload needs it); the interpreter named is the one running (WebUI's venv inside WebUI)
MISSING_BOTO3 = (f"S3 upload needs the boto3 package, which is not installed: run `{sys.executable} -m pip "
                 "install boto3`, then restart WebUI (or turn S3 upload off in Settings > AnimateDiff). "
                 "The local files are kept.")



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
