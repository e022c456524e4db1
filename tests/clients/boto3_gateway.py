#!/usr/bin/env python3
"""Drives a running s3fs-gateway with boto3, the way a Python user of S3 would.

Run by tests/tests/third_party.rs (test `boto3_client`), which starts the gateway and passes:

    GW_ENDPOINT          http://127.0.0.1:PORT
    GW_ACCESS_KEY        backend-role key (read-write)
    GW_SECRET_KEY
    GW_READER_ACCESS_KEY reader-role key (read-only)
    GW_READER_SECRET_KEY
    GW_BUCKET            a bucket name that does not exist yet
    GW_WORKDIR           a scratch directory

Every step runs even when an earlier one failed (unless it needs that one's result), prints
`ok   STEP` or `FAIL STEP: what was expected and what came back`, and the script exits 1 if
any step failed.
"""

import base64
import concurrent.futures
import hashlib
import os
import sys
import traceback
import urllib.error
import urllib.request

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError as err:  # pragma: no cover - environment problem, not a gateway one
    print(f"FAIL boto3 is not importable ({err}); install it: pip install boto3 "
          "(scripts/test.sh does)")
    sys.exit(2)

MiB = 1024 * 1024


def env(name):
    value = os.environ.get(name)
    if not value:
        print(f"FAIL environment variable {name} is not set")
        sys.exit(2)
    return value


ENDPOINT = env("GW_ENDPOINT")
BUCKET = env("GW_BUCKET")
WORKDIR = env("GW_WORKDIR")


def client(access_key, secret_key):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            # No retries: a flaky answer from the gateway is a finding, not noise to hide.
            retries={"total_max_attempts": 1},
            max_pool_connections=16,
        ),
    )


s3 = client(env("GW_ACCESS_KEY"), env("GW_SECRET_KEY"))
reader = client(env("GW_READER_ACCESS_KEY"), env("GW_READER_SECRET_KEY"))


class Mismatch(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Mismatch(what)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise Mismatch(f"{what}: expected {expected!r}, got {actual!r}")


def short(data):
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def expect_bytes(actual, expected, what):
    if actual != expected:
        first = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b),
                     min(len(actual), len(expected)))
        raise Mismatch(f"{what}: expected {short(expected)}, got {short(actual)} "
                       f"(first difference at byte {first})")


def error_code(err):
    return err.response.get("Error", {}).get("Code")


def data(n, seed):
    """Deterministic bytes, different for each seed."""
    out = bytearray()
    block = seed.to_bytes(8, "little")
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def md5_hex(b):
    return hashlib.md5(b).hexdigest()


def multipart_etag(b, part_size):
    parts = [b[i:i + part_size] for i in range(0, len(b), part_size)]
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


failures = []


def step(name, needs=()):
    """Decorator: runs the function now, records the outcome under `name`."""
    def run(fn):
        missing = [n for n in needs if n in failures]
        if missing:
            print(f"FAIL {name}: not run, it needs {', '.join(missing)}")
            failures.append(name)
            return fn
        try:
            fn()
            print(f"ok   {name}", flush=True)
        except Mismatch as err:
            print(f"FAIL {name}: {err}", flush=True)
            failures.append(name)
        except ClientError as err:
            print(f"FAIL {name}: unexpected S3 error {error_code(err)} "
                  f"(HTTP {err.response.get('ResponseMetadata', {}).get('HTTPStatusCode')}): "
                  f"{err}", flush=True)
            failures.append(name)
        except Exception as err:  # noqa: BLE001 - report anything, keep going
            print(f"FAIL {name}: {type(err).__name__}: {err}", flush=True)
            traceback.print_exc(file=sys.stdout)
            failures.append(name)
        return fn
    return run


# ---------------------------------------------------------------------------------------------

@step("create_bucket")
def _():
    s3.create_bucket(Bucket=BUCKET)
    s3.head_bucket(Bucket=BUCKET)
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    expect(BUCKET in names, f"list_buckets: {BUCKET} missing from {names}")


OBJ_KEY = "docs/hello world ünïcode.txt"
OBJ_BODY = data(1000, 1)
OBJ_META = {"color": "blue", "owner-name": "ada"}


@step("put/get/head with metadata", needs=["create_bucket"])
def _():
    put = s3.put_object(Bucket=BUCKET, Key=OBJ_KEY, Body=OBJ_BODY, Metadata=OBJ_META,
                        ContentType="text/plain; charset=utf-8")
    expected_etag = f'"{md5_hex(OBJ_BODY)}"'
    expect_eq(put["ETag"], expected_etag, "PutObject ETag")

    got = s3.get_object(Bucket=BUCKET, Key=OBJ_KEY)
    expect_bytes(got["Body"].read(), OBJ_BODY, "GetObject body")
    expect_eq(got["Metadata"], OBJ_META, "GetObject user metadata")
    expect_eq(got["ContentType"], "text/plain; charset=utf-8", "GetObject Content-Type")
    expect_eq(got["ETag"], expected_etag, "GetObject ETag")
    expect_eq(got["ContentLength"], len(OBJ_BODY), "GetObject Content-Length")

    head = s3.head_object(Bucket=BUCKET, Key=OBJ_KEY)
    expect_eq(head["ContentLength"], len(OBJ_BODY), "HeadObject Content-Length")
    expect_eq(head["Metadata"], OBJ_META, "HeadObject user metadata")
    expect_eq(head["ETag"], expected_etag, "HeadObject ETag")
    expect("LastModified" in head, "HeadObject has no Last-Modified")

    try:
        s3.head_object(Bucket=BUCKET, Key="docs/missing")
        raise Mismatch("HeadObject of a missing key succeeded")
    except ClientError as err:
        expect_eq(error_code(err), "404", "HeadObject of a missing key")
    try:
        s3.get_object(Bucket=BUCKET, Key="docs/missing")
        raise Mismatch("GetObject of a missing key succeeded")
    except ClientError as err:
        expect_eq(error_code(err), "NoSuchKey", "GetObject of a missing key")


@step("put with a SHA-256 checksum", needs=["create_bucket"])
def _():
    body = data(4096, 2)
    s3.put_object(Bucket=BUCKET, Key="docs/checksummed.bin", Body=body,
                  ChecksumAlgorithm="SHA256")
    got = s3.get_object(Bucket=BUCKET, Key="docs/checksummed.bin")["Body"].read()
    expect_bytes(got, body, "GetObject after a checksummed PutObject")
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    try:
        s3.put_object(Bucket=BUCKET, Key="docs/bad-checksum.bin", Body=body,
                      ChecksumSHA256=wrong)
        raise Mismatch("PutObject with a wrong x-amz-checksum-sha256 succeeded")
    except ClientError as err:
        expect_eq(error_code(err), "BadDigest", "PutObject with a wrong x-amz-checksum-sha256")
    try:
        s3.head_object(Bucket=BUCKET, Key="docs/bad-checksum.bin")
        raise Mismatch("an object was stored despite the checksum mismatch")
    except ClientError as err:
        expect_eq(error_code(err), "404", "HeadObject after a refused PutObject")


@step("ranged get", needs=["put/get/head with metadata"])
def _():
    got = s3.get_object(Bucket=BUCKET, Key=OBJ_KEY, Range="bytes=10-19")
    expect_eq(got["ResponseMetadata"]["HTTPStatusCode"], 206, "ranged GET status")
    expect_bytes(got["Body"].read(), OBJ_BODY[10:20], "ranged GET body (bytes=10-19)")
    expect_eq(got["ContentRange"], f"bytes 10-19/{len(OBJ_BODY)}", "ranged GET Content-Range")
    expect_eq(got["ContentLength"], 10, "ranged GET Content-Length")

    got = s3.get_object(Bucket=BUCKET, Key=OBJ_KEY, Range="bytes=-7")
    expect_bytes(got["Body"].read(), OBJ_BODY[-7:], "suffix range (bytes=-7)")
    got = s3.get_object(Bucket=BUCKET, Key=OBJ_KEY, Range="bytes=990-")
    expect_bytes(got["Body"].read(), OBJ_BODY[990:], "open range (bytes=990-)")
    try:
        s3.get_object(Bucket=BUCKET, Key=OBJ_KEY, Range="bytes=5000-6000")
        raise Mismatch("a range past the end succeeded")
    except ClientError as err:
        expect_eq(error_code(err), "InvalidRange", "range past the end")


MANY = [f"many/k{i:05d}" for i in range(1200)]


@step("put 1200 small keys", needs=["create_bucket"])
def _():
    def put(key):
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(put, MANY))


@step("list_objects_v2 paginator over 1200 keys", needs=["put 1200 small keys"])
def _():
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="many/"))
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    expect_eq(len(pages), 2, "number of ListObjectsV2 pages for 1200 keys (max-keys 1000)")
    expect_eq(pages[0].get("KeyCount"), 1000, "KeyCount of the first page")
    expect_eq(pages[0].get("IsTruncated"), True, "IsTruncated of the first page")
    expect_eq(pages[1].get("IsTruncated"), False, "IsTruncated of the last page")
    expect_eq(len(keys), len(MANY), "number of keys listed")
    expect(keys == MANY, "keys not listed in order, or missing/duplicated: first difference "
           + str(next(((i, a, b) for i, (a, b) in enumerate(zip(keys, MANY)) if a != b), None)))
    sizes = {o["Key"]: o["Size"] for p in pages for o in p.get("Contents", [])}
    expect_eq(sizes["many/k00042"], len("many/k00042"), "Size of many/k00042 in the listing")

    pages = list(s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="many/", PaginationConfig={"PageSize": 250}))
    expect_eq(len(pages), 5, "pages with MaxKeys=250")
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    expect(keys == MANY, "MaxKeys=250 pagination lost or reordered keys")

    got = s3.list_objects_v2(Bucket=BUCKET, Prefix="many/", StartAfter="many/k01190")
    expect_eq([o["Key"] for o in got.get("Contents", [])], MANY[1191:], "StartAfter listing")

    pages = list(s3.get_paginator("list_objects").paginate(Bucket=BUCKET, Prefix="many/"))
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    expect(keys == MANY, f"ListObjects (v1, marker) paginator: {len(keys)} keys, "
           "missing, duplicated or out of order")


@step("delimiter listing", needs=["create_bucket"])
def _():
    for key in ["tree/a.txt", "tree/d1/x", "tree/d1/sub/y", "tree/d2/z", "tree/e.txt"]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    got = s3.list_objects_v2(Bucket=BUCKET, Prefix="tree/", Delimiter="/")
    expect_eq([o["Key"] for o in got.get("Contents", [])], ["tree/a.txt", "tree/e.txt"],
              "Contents with delimiter /")
    expect_eq([p["Prefix"] for p in got.get("CommonPrefixes", [])], ["tree/d1/", "tree/d2/"],
              "CommonPrefixes with delimiter /")
    got = s3.list_objects_v2(Bucket=BUCKET, Prefix="tree/d1/", Delimiter="/")
    expect_eq([o["Key"] for o in got.get("Contents", [])], ["tree/d1/x"],
              "Contents under tree/d1/")
    expect_eq([p["Prefix"] for p in got.get("CommonPrefixes", [])], ["tree/d1/sub/"],
              "CommonPrefixes under tree/d1/")
    got = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/")
    prefixes = [p["Prefix"] for p in got.get("CommonPrefixes", [])]
    expect("tree/" in prefixes and prefixes == sorted(set(prefixes)),
           f"top-level CommonPrefixes (tree/ missing, duplicated or unsorted): {prefixes}")
    expect(not got.get("Contents"), f"top-level Contents should be empty: {got.get('Contents')}")


MP_SIZE = 12 * MiB + 12345
MP_PART = 5 * MiB


@step("multipart upload_file / download_file", needs=["create_bucket"])
def _():
    body = data(MP_SIZE, 3)
    src = os.path.join(WORKDIR, "multipart.src")
    dst = os.path.join(WORKDIR, "multipart.dst")
    with open(src, "wb") as f:
        f.write(body)
    cfg = TransferConfig(multipart_threshold=MP_PART, multipart_chunksize=MP_PART,
                         max_concurrency=4)
    s3.upload_file(src, BUCKET, "big/multipart.bin", Config=cfg,
                   ExtraArgs={"Metadata": {"kind": "multipart"}})
    head = s3.head_object(Bucket=BUCKET, Key="big/multipart.bin")
    expect_eq(head["ContentLength"], MP_SIZE, "size of the multipart object")
    expect_eq(head["ETag"], multipart_etag(body, MP_PART), "multipart ETag")
    expect_eq(head["Metadata"], {"kind": "multipart"}, "metadata of the multipart object")

    s3.download_file(BUCKET, "big/multipart.bin", dst, Config=cfg)  # parallel ranged GETs
    with open(dst, "rb") as f:
        expect_bytes(f.read(), body, "download_file of the multipart object")
    got = s3.get_object(Bucket=BUCKET, Key="big/multipart.bin")["Body"].read()
    expect_bytes(got, body, "GetObject of the multipart object")

    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    expect_eq(uploads, [], "in-progress uploads after completion")


@step("abort multipart upload", needs=["create_bucket"])
def _():
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="big/aborted.bin")
    s3.upload_part(Bucket=BUCKET, Key="big/aborted.bin", UploadId=up["UploadId"], PartNumber=1,
                   Body=data(MP_PART, 4))
    parts = s3.list_parts(Bucket=BUCKET, Key="big/aborted.bin", UploadId=up["UploadId"])
    expect_eq([p["PartNumber"] for p in parts.get("Parts", [])], [1], "ListParts")
    listed = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    expect(up["UploadId"] in listed, f"ListMultipartUploads misses the upload: {listed}")
    s3.abort_multipart_upload(Bucket=BUCKET, Key="big/aborted.bin", UploadId=up["UploadId"])
    try:
        s3.head_object(Bucket=BUCKET, Key="big/aborted.bin")
        raise Mismatch("an aborted upload became an object")
    except ClientError as err:
        expect_eq(error_code(err), "404", "HeadObject of an aborted upload")


@step("copy_object", needs=["put/get/head with metadata"])
def _():
    s3.copy_object(Bucket=BUCKET, Key="copies/copy.txt",
                   CopySource={"Bucket": BUCKET, "Key": OBJ_KEY})
    got = s3.get_object(Bucket=BUCKET, Key="copies/copy.txt")
    expect_bytes(got["Body"].read(), OBJ_BODY, "body of the copy")
    expect_eq(got["Metadata"], OBJ_META, "metadata of the copy (directive COPY)")
    expect_eq(got["ETag"], f'"{md5_hex(OBJ_BODY)}"', "ETag of the copy")

    s3.copy_object(Bucket=BUCKET, Key="copies/replaced.txt",
                   CopySource={"Bucket": BUCKET, "Key": OBJ_KEY},
                   MetadataDirective="REPLACE", Metadata={"fresh": "yes"})
    head = s3.head_object(Bucket=BUCKET, Key="copies/replaced.txt")
    expect_eq(head["Metadata"], {"fresh": "yes"}, "metadata of the copy (directive REPLACE)")

    # In-place metadata update, as s3fs-fuse does for chmod.
    s3.copy_object(Bucket=BUCKET, Key="copies/replaced.txt",
                   CopySource={"Bucket": BUCKET, "Key": "copies/replaced.txt"},
                   MetadataDirective="REPLACE", Metadata={"fresh": "again"})
    got = s3.get_object(Bucket=BUCKET, Key="copies/replaced.txt")
    expect_eq(got["Metadata"], {"fresh": "again"}, "metadata after a copy onto itself")
    expect_bytes(got["Body"].read(), OBJ_BODY, "body after a copy onto itself")


@step("presigned GET and PUT URLs", needs=["put/get/head with metadata"])
def _():
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": OBJ_KEY},
                                    ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=30) as resp:
        expect_eq(resp.status, 200, "presigned GET status")
        expect_bytes(resp.read(), OBJ_BODY, "presigned GET body")

    body = data(3000, 5)
    url = s3.generate_presigned_url("put_object",
                                    Params={"Bucket": BUCKET, "Key": "presigned/put.bin"},
                                    ExpiresIn=300)
    req = urllib.request.Request(url, data=body, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        expect_eq(resp.status, 200, "presigned PUT status")
    got = s3.get_object(Bucket=BUCKET, Key="presigned/put.bin")["Body"].read()
    expect_bytes(got, body, "object written through a presigned PUT")

    # A URL signed with a wrong secret must be refused.
    bad = client(env("GW_ACCESS_KEY"), "not-the-secret")
    url = bad.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": OBJ_KEY},
                                     ExpiresIn=300)
    try:
        urllib.request.urlopen(url, timeout=30)
        raise Mismatch("a presigned URL with a wrong signature was accepted")
    except urllib.error.HTTPError as err:
        expect_eq(err.code, 403, "status of a badly signed presigned URL")


@step("reader key is read-only", needs=["put/get/head with metadata"])
def _():
    got = reader.get_object(Bucket=BUCKET, Key=OBJ_KEY)["Body"].read()
    expect_bytes(got, OBJ_BODY, "GetObject with the reader key")
    keys = [o["Key"] for o in reader.list_objects_v2(Bucket=BUCKET, Prefix="docs/")
            .get("Contents", [])]
    expect(OBJ_KEY in keys, f"reader listing misses {OBJ_KEY}: {keys}")
    for what, call in [
        ("PutObject", lambda: reader.put_object(Bucket=BUCKET, Key="denied.txt", Body=b"no")),
        ("DeleteObject", lambda: reader.delete_object(Bucket=BUCKET, Key=OBJ_KEY)),
        ("CopyObject", lambda: reader.copy_object(
            Bucket=BUCKET, Key="denied-copy.txt", CopySource={"Bucket": BUCKET, "Key": OBJ_KEY})),
        ("CreateBucket", lambda: reader.create_bucket(Bucket=BUCKET + "-denied")),
    ]:
        try:
            call()
            raise Mismatch(f"{what} with the reader key succeeded")
        except ClientError as err:
            expect_eq(error_code(err), "AccessDenied", f"{what} with the reader key")
    for key in ["denied.txt", "denied-copy.txt"]:
        try:
            s3.head_object(Bucket=BUCKET, Key=key)
            raise Mismatch(f"{key} exists after a denied write")
        except ClientError as err:
            expect_eq(error_code(err), "404", f"HeadObject {key} after a denied write")
    s3.head_object(Bucket=BUCKET, Key=OBJ_KEY)  # still there after the denied delete


@step("delete_objects", needs=["put 1200 small keys"])
def _():
    for start in range(0, len(MANY), 1000):
        batch = MANY[start:start + 1000]
        got = s3.delete_objects(Bucket=BUCKET,
                                Delete={"Objects": [{"Key": k} for k in batch]})
        expect_eq(got.get("Errors", []), [], "DeleteObjects errors")
        expect_eq(sorted(d["Key"] for d in got.get("Deleted", [])), batch,
                  "keys reported deleted")
    got = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "many/never-existed"}],
                                                   "Quiet": True})
    expect_eq(got.get("Errors", []), [], "DeleteObjects of a missing key (S3: not an error)")
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix="many/")
    expect_eq(left.get("KeyCount"), 0, "keys left under many/ after DeleteObjects")


@step("empty and delete the bucket", needs=["create_bucket"])
def _():
    try:
        s3.delete_bucket(Bucket=BUCKET)
        raise Mismatch("DeleteBucket of a non-empty bucket succeeded")
    except ClientError as err:
        expect_eq(error_code(err), "BucketNotEmpty", "DeleteBucket of a non-empty bucket")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            got = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": objs})
            expect_eq(got.get("Errors", []), [], "DeleteObjects errors while emptying")
    s3.delete_bucket(Bucket=BUCKET)
    try:
        s3.head_bucket(Bucket=BUCKET)
        raise Mismatch("HeadBucket succeeded after DeleteBucket")
    except ClientError as err:
        expect_eq(error_code(err), "404", "HeadBucket after DeleteBucket")


if failures:
    print(f"\n{len(failures)} step(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("\nall boto3 steps passed")
