"""The soak's S3 verdict sees what it must: a check that cannot see a partial object, an
unfinished upload or a scratch object would report 0 of each whatever happened."""

from __future__ import annotations

import hashlib

from bench.soak_peers import Bucket, inspect_bucket
from tests.s3server import S3Server


def test_the_bucket_verdict_counts_partial_stray_and_unfinished(s3_server: S3Server) -> None:
    """One whole referenced object, one whole unreferenced, one cut short under a final key,
    one scratch object, one unfinished multipart upload: each counted where it belongs."""
    bucket = Bucket(server=s3_server, name=s3_server.bucket())
    client = s3_server.client
    whole = b"r" * 5000
    digest = hashlib.sha256(whole).hexdigest()
    meta = {"sha256": digest, "size": str(len(whole))}
    client.put_object(Bucket=bucket.name, Key="rec/a/one.wav", Body=whole, Metadata=meta)
    client.put_object(Bucket=bucket.name, Key="rec/a/two.wav", Body=whole, Metadata=meta)
    client.put_object(Bucket=bucket.name, Key="rec/b/cut.wav", Body=whole[:4000], Metadata=meta)
    client.put_object(Bucket=bucket.name, Key="rec/.partial/one-0123456789ab.part", Body=b"x")
    client.create_multipart_upload(Bucket=bucket.name, Key="rec/.partial/two-ba9876543210.part")

    verdict = inspect_bucket(bucket, ["rec/a/one.wav"], {digest})

    assert verdict.objects_checked == 3
    assert verdict.digests["rec/a/one.wav"] == digest
    assert verdict.partial_objects == 1
    assert (verdict.stray_objects, verdict.stray_keys) == (1, ["rec/a/two.wav"])
    assert verdict.scratch_objects == 1
    assert verdict.unfinished_uploads == 1
