"""Recording archive: fetch each available recording before its link expires, verify, store.

Modules, in the order the bytes flow: ``base`` (the store seam and the job), ``archiver``
(the daemon component: claims jobs earliest-deadline-first, pauses on a full disk),
``attempt`` (one try at one recording: a fresh link if needed, fetch, commit), ``download``
(HTTP streaming and every check a 200 can hide), ``disk`` (scratch files, fsync, atomic
rename) and ``layout`` (pure: the sanitized final path).
"""
