"""``[worker] archive = "s3://..."`` and ``[archive.s3]``: parsing, secrets, mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_config import BASE, ENVIRON, assert_one_problem, problems_of, write
from worker.config import load
from worker.config_sections import parse_s3_url

S3 = """
[worker]
archive = "s3://recordings-bucket/callwatch/prod"

[archive.s3]
endpoint_url = "http://127.0.0.1:9000"
region = "eu-west-1"
access_key_id_env = "AWS_ACCESS_KEY_ID"
secret_access_key_file = "s3-secret"
"""
ENV = {**ENVIRON, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}


def test_an_s3_archive_parses_with_secrets_from_env_and_credentials_dir(
        tmp_path: Path) -> None:
    """Bucket, prefix, endpoint, region and both secrets ($CREDENTIALS_DIRECTORY) are read."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "s3-secret").write_text("s3cr3t\n")
    config = load(write(tmp_path, S3 + BASE), {**ENV, "CREDENTIALS_DIRECTORY": str(creds)})
    s3 = config.archive.s3
    assert s3 is not None
    assert (s3.bucket, s3.prefix, s3.region, s3.endpoint_url) == (
        "recordings-bucket", "callwatch/prod", "eu-west-1", "http://127.0.0.1:9000")
    assert s3.access_key_id is not None and s3.access_key_id.reveal() == "AKIAEXAMPLE"
    assert s3.secret_access_key is not None and s3.secret_access_key.reveal() == "s3cr3t"
    assert "s3cr3t" not in repr(config)
    assert config.worker.archiving and config.worker.archive_dir is None


def test_archive_dir_and_archive_together_is_one_problem(tmp_path: Path) -> None:
    """Exactly one of archive_dir / archive."""
    path = write(tmp_path, S3.replace("[worker]\n", '[worker]\narchive_dir = "rec"\n') + BASE)
    (tmp_path / "s3-secret").write_text("x")
    assert_one_problem(problems_of(path, ENV), path, "worker.archive", "not both")


@pytest.mark.parametrize("url", ["s3://", "https://bucket/x", "s3://Bad_Bucket/x",
                                 "s3://bucket/a//b", "s3://bucket/../x"])
def test_a_bad_s3_url_is_one_problem(tmp_path: Path, url: str) -> None:
    """A URL that is not s3://BUCKET[/PREFIX] is named in one line."""
    path = write(tmp_path, S3.replace("s3://recordings-bucket/callwatch/prod", url) + BASE)
    (tmp_path / "s3-secret").write_text("x")
    assert_one_problem(problems_of(path, ENV), path, "worker.archive", "s3://BUCKET")


@pytest.mark.parametrize(("url", "service"), [
    ("gs://recordings/callwatch", "Google Cloud Storage"),
    ("az://recordings/callwatch", "Azure Blob Storage")])
def test_gcs_and_azure_archives_are_named_as_not_offered(tmp_path: Path, url: str,
                                                         service: str) -> None:
    """gs:// and az:// are a config error naming the key and saying they are not offered."""
    path = write(tmp_path, S3.replace("s3://recordings-bucket/callwatch/prod", url) + BASE)
    (tmp_path / "s3-secret").write_text("x")
    problems = problems_of(path, ENV)
    assert_one_problem(problems, path, "worker.archive", "is not offered yet")
    assert service in problems[0]


def test_archive_s3_without_an_s3_archive_is_a_problem(tmp_path: Path) -> None:
    """[archive.s3] alone (with archive_dir) says it needs archive = "s3://..."."""
    path = write(tmp_path, S3.replace('archive = "s3://recordings-bucket/callwatch/prod"',
                                      'archive_dir = "rec"') + BASE)
    assert_one_problem(problems_of(path, ENV), path, "archive.s3", "only with")


def test_missing_s3_credentials_are_named(tmp_path: Path) -> None:
    """Credentials are required; the problem names the key, never a value."""
    path = write(tmp_path, S3.replace('secret_access_key_file = "s3-secret"\n', "") + BASE)
    assert_one_problem(problems_of(path, ENV), path, "archive.s3.secret_access_key_env",
                       "missing")


@given(bucket=st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True),
       prefix=st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), max_size=3))
def test_s3_urls_round_trip(bucket: str, prefix: list[str]) -> None:
    """Any valid bucket and prefix come back out of the URL as they went in."""
    url = f"s3://{bucket}" + "".join(f"/{p}" for p in prefix)
    assert parse_s3_url(url) == (bucket, "/".join(prefix))
