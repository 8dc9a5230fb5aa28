"""Path games against kdash-s3's data folder (`-data DIR`, tools/s3/disk.go), the demo's
MinIO pods' store, by a client holding the key (the instance's owner, or anyone they gave it
to), and against the folder a MinIO pod's `server` argument names.

Each key or bucket here is refused with a reason, or kept as one file inside its bucket's
folder; nothing is ever written outside the folder, and the server keeps serving. Found here
and fixed: `minio server ../../..` (a relative folder) was handed to kdash-s3 as it was, so
it was taken from the process's working directory and `..` climbed out of the pod's root
(imageprograms._minio now makes it a container path first).
Complements test_s3_server_disk.py (`..`, `.`, empty parts, the temporary prefix, a key
clashing with a folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

from kdash_hub.dev.s3 import S3Server
from kdash_hub.localcluster import imageprograms
from tests.integration.test_s3_server_disk import ACCESS, SECRET, client, files_under


def refused(s3, bucket: str, key: str) -> str:
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    with pytest.raises(ClientError):  # not kept in memory either
        s3.get_object(Bucket=bucket, Key=key)
    return e.value.response["Error"]["Code"]


def test_a_key_that_is_a_prefix_of_another_and_the_other_way_round(tmp_path):
    data = tmp_path / "data"
    with S3Server(ACCESS, SECRET, data=data, buckets=["b"]) as server:
        s3 = client(server)
        s3.put_object(Bucket="b", Key="a", Body=b"file a")
        assert refused(s3, "b", "a/b") == "InvalidArgument"  # `a` is a file, not a folder
        assert refused(s3, "b", "a/b/c") == "InvalidArgument"
        s3.put_object(Bucket="b", Key="ab", Body=b"file ab")  # a string prefix is no folder
        s3.delete_object(Bucket="b", Key="a")
        s3.put_object(Bucket="b", Key="a/b", Body=b"now a folder")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="b")["Contents"]]
        assert keys == ["a/b", "ab"]
        # deleting a key that is only a folder on disk removes nothing of its objects
        s3.delete_object(Bucket="b", Key="a")
        assert s3.get_object(Bucket="b", Key="a/b")["Body"].read() == b"now a folder"
    assert files_under(data) == {"b/a/b": b"now a folder", "b/ab": b"file ab"}


def test_very_long_keys_are_refused_with_a_reason_or_kept_as_files(tmp_path):
    data = tmp_path / "data"
    long_part = "x" * 300  # longer than a file name may be
    deep = "/".join(["d"] * 400)  # many short parts: a long path, still a file
    with S3Server(ACCESS, SECRET, data=data, buckets=["b"]) as server:
        s3 = client(server)
        assert refused(s3, "b", long_part) == "InvalidArgument"
        assert refused(s3, "b", "ok/" + long_part) == "InvalidArgument"
        s3.put_object(Bucket="b", Key=deep, Body=b"deep")
        s3.put_object(Bucket="b", Key="y" * 255, Body=b"longest name")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="b")["Contents"]] == [
            deep, "y" * 255]
    assert files_under(data) == {"b/" + deep: b"deep", "b/" + "y" * 255: b"longest name"}
    assert not list(data.rglob(".kdash-s3-tmp-*"))  # no temporary file left behind


@pytest.mark.parametrize("key", ["..\\..\\escape", "a\\..\\..\\escape", "\\escape",
                                 "C:\\escape", "%2e%2e/escape", "..%2fescape", "~/escape",
                                 "$HOME", "a\u2215..\u2215b", "\u2024\u2024"])
def test_keys_that_look_like_paths_elsewhere_stay_one_file_in_the_bucket(tmp_path, key):
    """Backslashes, encoded dots and slashes, look-alike dots and slashes: on this server a
    key's only separator is `/`; these are plain names inside the bucket."""
    data = tmp_path / "data"
    with S3Server(ACCESS, SECRET, data=data, buckets=["b"]) as server:
        s3 = client(server)
        s3.put_object(Bucket="b", Key=key, Body=b"kept")
        assert s3.get_object(Bucket="b", Key=key)["Body"].read() == b"kept"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="b")["Contents"]] == [key]
    assert files_under(tmp_path) == {"data/b/" + key: b"kept"}


@pytest.mark.parametrize("key", ["a\x00b", "\x00", "a/\x00/b"])
def test_a_key_with_nul_is_refused(tmp_path, key):
    data = tmp_path / "data"
    with S3Server(ACCESS, SECRET, data=data, buckets=["b"]) as server:
        s3 = client(server)
        assert refused(s3, "b", key) == "InvalidArgument"
        s3.put_object(Bucket="b", Key="ok", Body=b"fine")  # the server carries on
    assert files_under(tmp_path) == {"data/b/ok": b"fine"}


@pytest.mark.parametrize("bucket", ["..", ".", "a..b", "..a", "-a", "A" * 3, "a" * 64,
                                    "a_b", ".kdash-s3-tmp-x"])
def test_bucket_names_that_are_no_bucket_are_refused(tmp_path, bucket):
    data = tmp_path / "data"
    with S3Server(ACCESS, SECRET, data=data) as server:
        s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                          aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                          config=Config(s3={"addressing_style": "path"}))
        with pytest.raises((ClientError, ParamValidationError)):
            s3.create_bucket(Bucket=bucket)
        assert s3.list_buckets()["Buckets"] == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data"]


def test_a_folder_made_beside_the_buckets_is_no_way_out(tmp_path):
    """Files and folders put into the data folder by hand: a file at the top is no bucket,
    and a symbolic link is neither a bucket nor an object at the next start."""
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not served")
    data.mkdir()
    (data / "stray.txt").write_bytes(b"no bucket")
    (data / "linked").symlink_to(outside, target_is_directory=True)
    (data / "real").mkdir()
    (data / "real" / "link.txt").symlink_to(outside / "secret.txt")
    with S3Server(ACCESS, SECRET, data=data) as server:
        s3 = client(server)
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["real"]
        assert s3.list_objects_v2(Bucket="real").get("Contents") is None
        with pytest.raises(ClientError):
            s3.get_object(Bucket="real", Key="link.txt")
    assert (outside / "secret.txt").read_bytes() == b"not served"


@pytest.mark.parametrize("args,inside", [
    (["server", "data"], "home/jovyan/data"),
    (["server", "../../../../../../../../etc"], "etc"),
    (["server", "../../.."], ""),
    (["server", "./a/../../b"], "home/b"),
    (["server", "--console-address", ":9001", "../../x"], "x"),
    (["server", "//data"], "data"),
    (["server", "/data/../../../../tmp"], "tmp"),
])
def test_the_minio_server_folder_never_leaves_the_pods_root(monkeypatch, tmp_path, args,
                                                             inside):
    """`minio server FOLDER`: relative to the container's working directory (the process's,
    /home/jovyan under the root here), and never above the root, whatever its `..`."""
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda program, argv, env: calls.append(argv))
    monkeypatch.setenv("MINIO_ROOT_USER", "admin")
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", "secret-password")
    root = tmp_path / "pod"
    workdir = root / "home" / "jovyan"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    imageprograms._minio(str(root), "10.244.0.5", "9000", "/bin/kdash-s3", args)
    folder = Path(calls[0][calls[0].index("-data") + 1])
    assert folder == (root / inside if inside else root)
    assert os.path.commonpath([folder, root]) == str(root)


def test_the_minio_server_folder_from_a_working_directory_outside_the_root(monkeypatch,
                                                                            tmp_path):
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda program, argv, env: calls.append(argv))
    monkeypatch.setenv("MINIO_ROOT_USER", "admin")
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", "secret-password")
    root = tmp_path / "pod"
    root.mkdir()
    monkeypatch.chdir(tmp_path)  # not under the root: the container's / is taken
    imageprograms._minio(str(root), "10.244.0.5", "9000", "/bin/kdash-s3",
                         ["server", "../data"])
    assert calls[0][-2:] == ["-data", str(root / "data")]


def test_a_symbolic_link_put_into_the_folder_takes_no_write_or_delete_outside(tmp_path):
    """Found here and fixed (disk.go objectPath): a bucket's folder, or a folder inside it,
    replaced by a link to elsewhere (by anyone who can write the pod's volume) had the next
    write land there, and a delete remove a file there."""
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "k").write_bytes(b"someone else's")
    with S3Server(ACCESS, SECRET, data=data, buckets=["b", "linked"]) as server:
        s3 = client(server)
        s3.put_object(Bucket="b", Key="dir/first", Body=b"1")
        s3.put_object(Bucket="linked", Key="k", Body=b"mine")
        # behind the server's back: the bucket's folder and a sub-folder become links
        for folder in (data / "linked", data / "b" / "dir"):
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
            folder.symlink_to(outside, target_is_directory=True)
        for bucket, key in (("linked", "k"), ("linked", "new"), ("b", "dir/k"),
                            ("b", "dir/new")):
            with pytest.raises(ClientError) as e:
                s3.put_object(Bucket=bucket, Key=key, Body=b"through the link")
            assert "symbolic link" in e.value.response["Error"]["Message"]
        s3.delete_object(Bucket="linked", Key="k")
        s3.delete_objects(Bucket="b", Delete={"Objects": [{"Key": "dir/first"}]})
        s3.put_object(Bucket="b", Key="ok", Body=b"fine")  # the server carries on
    assert sorted(p.name for p in outside.iterdir()) == ["k"]
    assert (outside / "k").read_bytes() == b"someone else's"
