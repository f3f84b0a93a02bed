"""Reliability and security suites run against a real ``simsearch serve`` (issue 6).

Each module is one suite with a plain function that returns a JSON-able summary; the fast versions run in
``tests/reliability`` and the long ones in ``python -m bench.reliability`` (``__main__.py``):

* :mod:`.server`: start, kill and restart a real server on loopback, in its own process group.
* :mod:`.badinput`: generated bad (and odd but valid) uploads, ids and parameters, with expected answers.
* :mod:`.snapshot`: byte-for-byte fingerprints of an index directory.
* :mod:`.soak`: client threads mixing search, add and delete, checking nothing is lost or resurrected.
* :mod:`.crash`: SIGKILL the server during adds and saves; the index must load with every acknowledged add.
* :mod:`.decode_fuzz`: mutated image bytes through the decoder with a time and memory limit per input.
* :mod:`.schema_fuzz`: schemathesis against ``/openapi.json``.
"""
