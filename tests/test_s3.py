"""S3 upload against a real S3-compatible server (moto) started on 127.0.0.1 by the test (the ``server``
fixture: tests/conftest.py, tests/fixtures/s3.py).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from motion_module.errors import OutputError, ParameterError
from motion_module.video.files import S3Options, SavedVideo, save_video, upload_s3

pytest.importorskip("boto3")
pytest.importorskip("moto.server", reason="needs moto[server]")

import boto3
from botocore.config import Config

from tests.fixtures.s3 import free_port, options

INFOTEXT = 'cat, "fox": run\nSteps: 4, Größe'


def s3_client(server: dict[str, str]):
    return boto3.client("s3", endpoint_url=server["endpoint"], region_name="us-east-1",
                        aws_access_key_id=server["access_key"],
                        aws_secret_access_key=server["secret_key"],
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture()
def video(tmp_path: Path) -> SavedVideo:
    y, x = np.mgrid[0:24, 0:32]
    planes = [np.stack([x * 8, y * 10, np.full_like(x, i * 60)], -1) for i in range(4)]
    frames = [Image.fromarray(p.astype(np.uint8)) for p in planes]
    return save_video(frames, tmp_path, seed=77, formats=["GIF", "WEBP", "PNG", "TXT"],
                      infotext=INFOTEXT)


def digests(paths: list[Path]) -> dict[str, str]:
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p]) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_upload_creates_bucket_and_round_trips_bytes(server: dict[str, str],
                                                     video: SavedVideo) -> None:
    client = s3_client(server)
    assert "animatediff-out" not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    paths = [video.files["GIF"], video.files["WEBP"], video.files["PNG"]]
    urls = upload_s3(paths, options(server))
    assert "animatediff-out" in [b["Name"] for b in client.list_buckets()["Buckets"]]
    gif_key = f"2026-01-02/{video.name}.gif"
    assert urls[0] == f"{server['endpoint']}/animatediff-out/{gif_key}"
    assert len(urls) == 2 + 4  # GIF, WEBP and the four PNG frames
    assert urls[2].endswith(f"/2026-01-02/{video.name}/00000.png")
    for url in urls:
        key = url.split("/animatediff-out/", 1)[1]
        body = client.get_object(Bucket="animatediff-out", Key=key)["Body"].read()
        local = video.directory / key.split("/", 1)[1]
        assert body == local.read_bytes()
    head = client.head_object(Bucket="animatediff-out", Key=gif_key)
    assert head["ContentType"] == "image/gif"


def test_upload_into_an_existing_bucket_with_a_region(server: dict[str, str],
                                                      video: SavedVideo) -> None:
    opts = options(server, bucket="eu-bucket", region="eu-west-1", prefix="")
    first = upload_s3([video.files["TXT"]], opts)
    second = upload_s3([video.files["GIF"]], opts)  # bucket already there
    assert first == [f"{server['endpoint']}/eu-bucket/{video.name}.txt"]
    assert second == [f"{server['endpoint']}/eu-bucket/{video.name}.gif"]
    client = s3_client(server)
    location = client.get_bucket_location(Bucket="eu-bucket")["LocationConstraint"]
    assert location == "eu-west-1"
    body = client.get_object(Bucket="eu-bucket", Key=f"{video.name}.txt")["Body"].read()
    assert body.decode("utf-8") == INFOTEXT


@pytest.mark.parametrize("bad", [{"secret_key": "wrong-secret"},
                                 {"access_key": "AKIAUNKNOWNKEY000000", "secret_key": "x"}])
def test_wrong_credentials_give_a_clear_error_and_keep_files(server: dict[str, str],
                                                             video: SavedVideo, bad: dict) -> None:
    paths = list(video.files.values())
    before = digests(paths)
    with pytest.raises(OutputError) as info:
        upload_s3(paths, options(server, **bad))
    message = str(info.value)
    assert "rejected the credentials" in message and "local files are kept" in message
    assert digests(paths) == before


def test_unreachable_endpoint_fails_fast_and_keeps_files(video: SavedVideo) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    paths = list(video.files.values())
    before = digests(paths)
    start = time.monotonic()
    with pytest.raises(OutputError) as info:
        upload_s3(paths, S3Options(endpoint=closed, bucket="animatediff-out", access_key="a",
                                   secret_key="b", connect_timeout=1.0, max_attempts=1))
    assert time.monotonic() - start < 10
    assert "cannot reach the S3 endpoint" in str(info.value) and closed in str(info.value)
    assert digests(paths) == before


def test_missing_local_file_is_reported(server: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no such file"):
        upload_s3([tmp_path / "gone.gif"], options(server))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"endpoint": "ftp://host"}, "s3_endpoint"), ({"endpoint": "127.0.0.1:9000"}, "s3_endpoint"),
    ({"bucket": "No_Caps"}, "s3_bucket"), ({"bucket": "ab"}, "s3_bucket"),
    ({"prefix": "a/../b"}, "s3_prefix"), ({"access_key": "only-one"}, "s3_access_key"),
    ({"connect_timeout": 0}, "s3_connect_timeout"), ({"max_attempts": 0}, "s3_max_attempts"),
])
def test_s3_options_validation(kwargs: dict, field: str) -> None:
    values = {"endpoint": "https://s3.example.com", "bucket": "animatediff-out"}
    values.update(kwargs)
    with pytest.raises(ParameterError) as info:
        S3Options(**values)
    assert info.value.field == field


def test_key_prefix_normalisation() -> None:
    assert S3Options(endpoint="http://h", bucket="abc", prefix="/a//b/").key_prefix == "a/b/"
    assert S3Options(endpoint="http://h", bucket="abc", prefix="").key_prefix == ""


def test_missing_boto3_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = tmp_path / "clip.gif"
    clip.write_bytes(b"GIF89a")
    for name in ("boto3", "botocore.config"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as when not installed
    with pytest.raises(OutputError) as info:
        upload_s3([clip], S3Options(endpoint="http://127.0.0.1:9", bucket="clips"))
    message = str(info.value)
    assert f"{sys.executable} -m pip install boto3" in message and "local files are kept" in message
    assert clip.read_bytes() == b"GIF89a"
