"""Recording archive: fetch each available recording before its link expires, verify, store.

Modules, in the order the bytes flow: ``base`` (the store seam and the job), ``archiver``
(the daemon component: claims jobs earliest-deadline-first, pauses when the target cannot take
objects), ``attempt`` (one try at one recording: a fresh link if needed, fetch, commit),
``download`` (HTTP streaming and every check a 200 can hide), ``target`` (the ArchiveTarget
seam), ``targets`` (builds the configured one), ``folder`` + ``disk`` (a local folder: scratch
files, fsync, atomic rename), ``s3`` + ``s3_rest`` (S3-compatible object storage) and
``layout`` (pure: the sanitized final path).
"""
