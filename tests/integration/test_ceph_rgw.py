"""The Ceph RGW fixture: a real S3 server that is strict where the storage
code must be right (payload hashes, signatures, conditional PUTs, multipart
uploads), shown through botocore as the S3 storage will use it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest
from botocore.exceptions import ClientError

from .harness.ceph import CephPrograms, CephRgw, CephStartError
from .harness.s3service import S3Service

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def error_of(raised: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def read(client: Any, bucket: str, key: str) -> bytes:
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def test_put_signed_with_the_payload_sha256_reads_back_exactly(ceph_rgw: S3Service) -> None:
    client = ceph_rgw.client()
    bucket = ceph_rgw.new_bucket()
    body = os.urandom(100_000)
    sent: list[bytes] = []
    client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: sent.append(request.headers["X-Amz-Content-SHA256"]),
    )

    client.put_object(Bucket=bucket, Key="blob", Body=body)

    assert sent == [hashlib.sha256(body).hexdigest().encode()]
    assert read(client, bucket, "blob") == body


def test_put_whose_body_is_not_the_declared_sha256_is_refused(
    ceph_rgw: S3Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without botocore's own CRC32 of the body, the declared sha256 is the
    # only thing that can give the swapped body away. (SeaweedFS 4.48
    # stores such a body; this is what the strict server is here for.)
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    client = ceph_rgw.client()
    bucket = ceph_rgw.new_bucket()
    signed_for = b"the bytes the request was signed for"
    sent_instead = b"THE BYTES THE REQUEST WAS SIGNED FOR"  # same length
    sent: list[dict[str, Any]] = []

    def swap_body(request: Any, **_: Any) -> None:
        # After signing: the signature and its x-amz-content-sha256 stay
        # valid for ``signed_for``; only the body differs.
        request.body = sent_instead
        sent.append(dict(request.headers))

    client.meta.events.register("before-send.s3.PutObject", swap_body)
    with pytest.raises(ClientError) as raised:
        client.put_object(Bucket=bucket, Key="blob", Body=signed_for)

    [headers] = sent
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(signed_for).hexdigest().encode()
    body_checks = ("x-amz-checksum", "content-md5")
    assert not [name for name in headers if name.lower().startswith(body_checks)]
    assert error_of(raised) == (400, "XAmzContentSHA256Mismatch")
    with pytest.raises(ClientError) as missing:
        ceph_rgw.client().head_object(Bucket=bucket, Key="blob")
    assert error_of(missing)[0] == 404


def test_request_signed_with_another_secret_is_refused(ceph_rgw: S3Service) -> None:
    bucket = ceph_rgw.new_bucket()
    impostor = attrs.evolve(ceph_rgw, secret_key=ceph_rgw.secret_key + "x").client()

    with pytest.raises(ClientError) as raised:
        impostor.put_object(Bucket=bucket, Key="blob", Body=b"content")

    assert error_of(raised) == (403, "SignatureDoesNotMatch")


def test_if_none_match_star_commits_a_new_key_and_refuses_an_existing_one(
    ceph_rgw: S3Service,
) -> None:
    client = ceph_rgw.client()
    bucket = ceph_rgw.new_bucket()

    client.put_object(Bucket=bucket, Key="blob", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as raised:
        client.put_object(Bucket=bucket, Key="blob", Body=b"second", IfNoneMatch="*")

    assert error_of(raised) == (412, "PreconditionFailed")
    assert read(client, bucket, "blob") == b"first"


def test_multipart_upload_of_two_5_mib_parts_reads_back(ceph_rgw: S3Service) -> None:
    client = ceph_rgw.client()
    bucket = ceph_rgw.new_bucket()
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB)]

    upload = client.create_multipart_upload(Bucket=bucket, Key="blob")["UploadId"]
    etags = [
        client.upload_part(
            Bucket=bucket, Key="blob", UploadId=upload, PartNumber=number, Body=part
        )["ETag"]
        for number, part in enumerate(parts, start=1)
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="blob",
        UploadId=upload,
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        },
    )

    assert read(client, bucket, "blob") == b"".join(parts)
    head = client.head_object(Bucket=bucket, Key="blob")
    assert head["ContentLength"] == 10 * MIB
    # S3's multipart ETag: the MD5 of the parts' MD5s, then the part count.
    assert head["ETag"].endswith('-2"')


def processes_using(directory: Path) -> list[str]:
    """The command lines of running processes that name ``directory``, as
    ``ps`` would show them."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, or one that just ended
            continue
        if str(directory) in argv:
            found.append(argv)
    return found


def test_stopped_cluster_leaves_no_process(tmp_path: Path) -> None:
    cluster = CephRgw.start(CephPrograms.require(), tmp_path / "ceph")
    assert len(processes_using(tmp_path)) == 3  # ceph-mon, ceph-osd, radosgw

    cluster.stop()

    assert processes_using(tmp_path) == []


def test_failed_start_shows_each_daemon_log_and_leaves_no_process(tmp_path: Path) -> None:
    false = shutil.which("false")
    assert false is not None
    programs = attrs.evolve(CephPrograms.require(), radosgw=false)

    with pytest.raises(CephStartError) as raised:
        CephRgw.start(programs, tmp_path / "ceph")

    message = str(raised.value)
    assert "radosgw exited with 1 while waiting for an HTTP answer" in message
    assert "--- ceph-mon log, last 40 lines:" in message
    assert "--- ceph-osd log, last 40 lines:" in message
    assert "--- radosgw log, last 40 lines:" in message
    assert "mon.a@0(leader)" in message  # the monitor's own lines
    assert processes_using(tmp_path) == []
