"""Several API servers on one store: an add through one server must be found through every other at once,
and a delete through one must be gone from every other at once (read-your-writes across servers).

Each round adds a unique image under a unique label through server ``i``, then, immediately, reads it through
every other server (its info, and a search filtered to its label, which must return exactly it); every third
round deletes it again through the next server and checks it is gone everywhere.  ``lost``: an acknowledged
add missing from a server (or from the store at the end); ``inconsistent``: a read that disagreed with the
acknowledged state (a deleted item found, a search not returning the item just added).
"""

from __future__ import annotations

import time

import requests

from bench.reliability.soak import unique_image
from index.location import open_store


def run_shared_trial(urls: list[str], token: str, location: str, *, rounds: int = 30, seed: int = 0) -> dict:
    auth = {"Authorization": f"Bearer {token}"}
    live: dict[int, str] = {}
    deleted: set[int] = set()
    problems: list[str] = []
    lost = inconsistent = reads = 0
    add_ms, read_ms = [], []
    started = time.perf_counter()
    for r in range(rounds):
        writer = urls[r % len(urls)]
        label = f"shared-{seed}-{r}"
        image = unique_image(seed * 100_000 + r)
        t0 = time.perf_counter()
        answer = requests.post(f"{writer}/api/images", headers=auth, data={"label": label}, timeout=60,
                               files={"image": ("s.png", image, "image/png")})
        add_ms.append((time.perf_counter() - t0) * 1000)
        if answer.status_code != 201:
            problems.append(f"add through {writer}: {answer.status_code} {answer.text[:200]}")
            continue
        item_id = answer.json()["id"]
        live[item_id] = label
        for reader in urls:
            if reader == writer:
                continue
            t0 = time.perf_counter()
            info = requests.get(f"{reader}/api/images/{item_id}/info", timeout=30)
            hits = requests.post(f"{reader}/api/search?k=1", params={"label": label}, data=image,
                                 headers={"Content-Type": "image/png"}, timeout=30)
            read_ms.append((time.perf_counter() - t0) * 1000)
            reads += 2
            if info.status_code != 200 or info.json().get("label") != label:
                lost += 1
                problems.append(f"add {item_id} through {writer} not found through {reader}: {info.status_code}")
            if hits.status_code != 200 or [n["id"] for n in hits.json()["neighbors"]] != [item_id]:
                inconsistent += 1
                problems.append(f"search through {reader} did not return {item_id} just added through {writer}")
        if r % 3 == 2:
            remover = urls[(r + 1) % len(urls)]
            gone = requests.delete(f"{remover}/api/images/{item_id}", headers=auth, timeout=30)
            if gone.status_code != 200:
                problems.append(f"delete {item_id} through {remover}: {gone.status_code} {gone.text[:200]}")
                continue
            live.pop(item_id)
            deleted.add(item_id)
            for reader in urls:
                reads += 1
                if requests.get(f"{reader}/api/images/{item_id}/info", timeout=30).status_code != 404:
                    inconsistent += 1
                    problems.append(f"{item_id} deleted through {remover} still found through {reader}")
    seconds = time.perf_counter() - started
    store = open_store(location)
    try:
        found = store.get_many(list(live) + list(deleted))
    finally:
        store.close()
    for item_id, label in live.items():
        if item_id not in found or found[item_id].label != label:
            lost += 1
            problems.append(f"acknowledged add {item_id} missing from the store")
    for item_id in deleted & set(found):
        inconsistent += 1
        problems.append(f"acknowledged delete {item_id} back in the store")
    add_ms.sort()
    read_ms.sort()
    return {"servers": len(urls), "adds": len(live) + len(deleted), "deletes": len(deleted), "reads": reads,
            "lost": lost, "inconsistent": inconsistent, "seconds": round(seconds, 2),
            "add_p50_ms": round(add_ms[len(add_ms) // 2], 2) if add_ms else None,
            "cross_read_p50_ms": round(read_ms[len(read_ms) // 2], 2) if read_ms else None,
            "problems": problems[:20]}
