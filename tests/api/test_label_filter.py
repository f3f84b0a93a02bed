"""``?label=``: search among one class only, on every search endpoint, on both stores (run with
``--backend milvus`` too).  The filter runs inside the index search, so a rare class still gets its k hits."""

from __future__ import annotations

import io

import pytest

from apitest_helpers import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def search(client, data: bytes, query: str):
    return client.post(f"/api/search?{query}", data={"image": (io.BytesIO(data), "q.png")},
                       content_type="multipart/form-data")


def test_every_hit_carries_the_label_and_k_is_met(client, png_bytes, fmnist_folder):
    own = fmnist_folder.class_names[fmnist_folder.labels[0]]
    other = next(name for name in fmnist_folder.class_names if name != own)
    plain = search(client, png_bytes, "k=20").get_json()["neighbors"]
    assert other not in {n["label"] for n in plain[:3]}  # unfiltered, the query's own class leads
    body = search(client, png_bytes, f"k=20&label={other}").get_json()
    assert len(body["neighbors"]) == 20 and {n["label"] for n in body["neighbors"]} == {other}
    sims = [n["similarity"] for n in body["neighbors"]]
    assert sims == sorted(sims, reverse=True) and sims[0] < plain[0]["similarity"]
    assert body["prediction"]["label"] == other
    # the class holds 60 items: asking for more returns exactly those
    assert len(search(client, png_bytes, f"k=100&label={other}").get_json()["neighbors"]) == 60


def test_filter_on_batch_and_similar(client, png_bytes, fmnist_folder, ids):
    label = fmnist_folder.class_names[fmnist_folder.labels[1]]
    r = client.post(f"/api/search/batch?k=5&label={label}", content_type="multipart/form-data",
                    data={"images": [(io.BytesIO(png_bytes), "a.png"), (io.BytesIO(png_bytes), "b.png")]})
    assert r.status_code == 200
    assert all({n["label"] for n in res["neighbors"]} == {label} for res in r.get_json()["results"])
    body = client.get(f"/api/images/{ids[0]}/similar?k=7&label={label}").get_json()
    assert len(body["neighbors"]) == 7 and {n["label"] for n in body["neighbors"]} == {label}
    assert ids[0] not in {n["id"] for n in body["neighbors"]}


def test_unknown_label_gives_no_neighbors_and_bad_label_is_400(client, png_bytes):
    body = search(client, png_bytes, "k=5&label=No such class").get_json()
    assert body["neighbors"] == [] and body["prediction"]["votes"] == {}
    for empty in ("", "%20%20"):  # present but empty is a mistake, not "no filter"
        r = search(client, png_bytes, f"k=5&label={empty}")
        assert r.status_code == 400 and "label" in r.get_json()["error"]
    r = search(client, png_bytes, "k=5&label=" + "x" * 101)
    assert r.status_code == 400 and "label" in r.get_json()["error"]
    r = search(client, png_bytes, "k=5&label=a%0Ab")
    assert r.status_code == 400


def test_quotes_and_backslashes_are_data_not_syntax(make_writable_app, png_bytes):
    """A label is passed to the index as data: quotes, backslashes and expression syntax match literally."""
    client = make_writable_app().test_client()
    tricky = 'it\'s "x" \\ or label != ""'
    r = client.post("/api/images", data={"image": (io.BytesIO(png_bytes), "n.png"), "label": tricky},
                    content_type="multipart/form-data", headers=AUTH)
    assert r.status_code == 201, r.get_json()
    from urllib.parse import quote

    hits = search(client, png_bytes, f"k=10&label={quote(tricky)}").get_json()["neighbors"]
    assert [h["label"] for h in hits] == [tricky] and hits[0]["id"] == r.get_json()["id"]
    assert search(client, png_bytes, f"k=10&label={quote('or label != ')}").get_json()["neighbors"] == []


@pytest.mark.parametrize("weighted", ["false", "true"])
def test_filter_and_vote_agree(client, png_bytes, fmnist_folder, weighted):
    label = fmnist_folder.class_names[fmnist_folder.labels[0]]
    body = search(client, png_bytes, f"k=9&label={label}&weighted={weighted}").get_json()
    assert body["prediction"]["label"] == label and body["prediction"]["confidence"] == pytest.approx(1.0)
