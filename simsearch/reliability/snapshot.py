"""Byte-for-byte fingerprints of an index directory, to prove that a refused request changed nothing."""

from __future__ import annotations

import hashlib
import os

# created empty by the first writer that takes the cross-process lock; holds no data
IGNORED = frozenset({".write.lock"})


def fingerprint(directory: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``directory`` (sub-folders included)."""
    result: dict[str, str] = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel in IGNORED:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            result[rel] = digest.hexdigest()
    return result


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Human-readable list of files added, removed or changed between two fingerprints."""
    changes = [f"added {p}" for p in sorted(after.keys() - before.keys())]
    changes += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    changes += [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return changes
