"""kdash-s3 keeps objects as files (`-data DIR`), so the demo's MinIO keeps them over a restart.

The server (tools/s3, disk.go) is built from its Go module and run for real; boto3 talks to
it with signed requests. Attacks: keys that would write outside the folder, or over the
server's own temporary files, are refused and write nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from kdash_hub.dev.s3 import S3Server
from kdash_hub.localcluster import imageprograms

ACCESS, SECRET = "AKDISKTEST", "disk-test-secret-0123456789"


def client(server: S3Server, secret: str = SECRET):
    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=ACCESS, aws_secret_access_key=secret)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_objects_survive_a_restart_and_deletes_stay_deleted(tmp_path):
    data = tmp_path / "data"
    with S3Server(ACCESS, SECRET, data=data) as server:
        s3 = client(server)
        s3.create_bucket(Bucket="results")
        s3.put_object(Bucket="results", Key="run1/metrics.json", Body=b'{"acc": 0.9}')
        s3.put_object(Bucket="results", Key="run1/model/weights.bin", Body=b"\x00\x01" * 500)
        s3.put_object(Bucket="results", Key="notes.txt", Body=b"draft")
        s3.put_object(Bucket="results", Key="notes.txt", Body=b"final")  # replaced
        s3.copy_object(Bucket="results", Key="run2/metrics.json",
                       CopySource={"Bucket": "results", "Key": "run1/metrics.json"})
        s3.delete_object(Bucket="results", Key="run1/model/weights.bin")
        s3.create_bucket(Bucket="scratch")
        s3.put_object(Bucket="scratch", Key="a", Body=b"1")
        s3.delete_objects(Bucket="scratch", Delete={"Objects": [{"Key": "a"}]})
        s3.delete_bucket(Bucket="scratch")
    # on disk exactly the objects, as files, nothing left of the deleted ones
    assert files_under(data) == {"results/notes.txt": b"final",
                                 "results/run1/metrics.json": b'{"acc": 0.9}',
                                 "results/run2/metrics.json": b'{"acc": 0.9}'}
    assert not (data / "results" / "run1" / "model").exists()
    assert not (data / "scratch").exists()
    with S3Server(ACCESS, SECRET, data=data) as server:
        s3 = client(server)
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["results"]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"]]
        assert keys == ["notes.txt", "run1/metrics.json", "run2/metrics.json"]
        assert s3.get_object(Bucket="results", Key="notes.txt")["Body"].read() == b"final"
        with pytest.raises(ClientError):  # signatures are still checked
            client(server, SECRET + "x").list_objects_v2(Bucket="results")


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "a//b", "./a", "a/./b",
                                 "dir/", ".kdash-s3-tmp-x", "a/.kdash-s3-tmp-1"])
def test_keys_that_are_no_safe_relative_path_are_refused(tmp_path, key):
    data = tmp_path / "data"
    with S3Server(ACCESS, SECRET, data=data, buckets=["b"]) as server:
        s3 = client(server)
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket="b", Key=key, Body=b"x")
        assert refused.value.response["Error"]["Code"] == "InvalidArgument"
        assert "can't be stored" in refused.value.response["Error"]["Message"]
        with pytest.raises(ClientError):  # not kept in memory either
            s3.get_object(Bucket="b", Key=key)
        s3.put_object(Bucket="b", Key="ok", Body=b"fine")  # the server carries on
    assert files_under(tmp_path) == {"data/b/ok": b"fine"}


def test_a_key_clashing_with_a_folder_is_refused_with_a_reason(tmp_path):
    data = tmp_path / "data"
    with S3Server(ACCESS, SECRET, data=data, buckets=["b"]) as server:
        s3 = client(server)
        s3.put_object(Bucket="b", Key="a/b", Body=b"inner")
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket="b", Key="a", Body=b"outer")
        assert refused.value.response["Error"]["Code"] == "InvalidArgument"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="b")["Contents"]] == ["a/b"]
    assert files_under(data) == {"b/a/b": b"inner"}


def test_the_minio_image_keeps_its_objects_in_the_folder_it_serves(monkeypatch, tmp_path):
    """`minio server /data --console-address :9001` runs kdash-s3 with -data at the pod's
    /data (under the pod's root), whatever flags come before or after the folder."""
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda program, argv, env: calls.append(argv))
    monkeypatch.setenv("MINIO_ROOT_USER", "admin")
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", "secret-password")
    root = str(tmp_path / "pod")
    for args in (["server", "/data", "--console-address", ":9001"],
                 ["server", "--console-address", ":9001", "/data"],
                 ["server", "--quiet", "/data"],
                 ["server", "--address=:9000", "/data"]):
        imageprograms._minio(root, "10.244.0.5", "9000", "/bin/kdash-s3", args)
    assert all(argv[-2:] == ["-data", os.path.join(root, "data")] for argv in calls), calls
    calls.clear()
    imageprograms._minio(root, "10.244.0.5", "9000", "/bin/kdash-s3",
                         ["server", "/../../etc"])  # stays under the pod's root
    assert calls[0][-1] == os.path.join(root, "etc")
