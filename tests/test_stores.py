"""Checkpoint stores: one contract, run against MemoryStore, LocalStore and the real Redis."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_learner.errors import CheckpointError, CheckpointFenced, ConnectionFailed
from stream_learner.stores import (
    PACK_SLICE,
    SQLITE_PAGE_SIZE,
    LocalStore,
    MemoryStore,
    RedisStore,
    SlicedPacker,
    redact_url,
)

SHARD = "events:0"
OTHER = "events:1"
KEEP = 3
BINARY = bytes(range(256)) * 3 + b"\r\n\x00\xff"


@pytest.fixture
def redis_prefix(redis_prefixes: Callable[[str], str]) -> str:
    return redis_prefixes("test")


StoreFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "local", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Builds stores of one kind; stores built twice share their data (same folder / prefix)."""
    made: list[Any] = []
    if request.param == "memory":
        shared: dict[int, MemoryStore] = {}

        def factory(keep: int = KEEP) -> Any:
            return shared.setdefault(keep, MemoryStore(keep=keep))

    elif request.param == "local":

        def factory(keep: int = KEEP) -> Any:
            return LocalStore(tmp_path / "ckpt", keep=keep)

    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")

        def factory(keep: int = KEEP) -> Any:
            store = RedisStore(url, prefix, keep=keep)
            made.append(store)
            return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Any:
    return make_store()


# -- the contract ---------------------------------------------------------------------------


def test_empty_store(store):
    assert store.latest(SHARD) is None
    assert store.get(SHARD, 1) is None
    assert store.ids(SHARD) == []
    assert store.shards() == []
    assert store.epoch(SHARD) == -1


def test_save_returns_increasing_ids_and_latest_is_the_newest(store):
    ids = [store.save(SHARD, 1, f"blob-{i}".encode()) for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert store.latest(SHARD) == (ids[-1], b"blob-4")
    assert store.get(SHARD, ids[-1]) == b"blob-4"
    assert store.get(SHARD, ids[-2]) == b"blob-3"


def test_ids_keep_only_the_last_keep(store):
    ids = [store.save(SHARD, 1, f"blob-{i}".encode()) for i in range(7)]
    assert store.ids(SHARD) == ids[-KEEP:]
    for old in ids[:-KEEP]:
        assert store.get(SHARD, old) is None
    for i, kept in enumerate(ids[-KEEP:], start=7 - KEEP):
        assert store.get(SHARD, kept) == f"blob-{i}".encode()


def test_keep_one(make_store):
    store = make_store(keep=1)
    for i in range(4):
        checkpoint_id = store.save(SHARD, 0, bytes([i]))
    assert store.ids(SHARD) == [checkpoint_id]
    assert store.latest(SHARD) == (checkpoint_id, b"\x03")


def test_shards_are_independent(store):
    a = [store.save(SHARD, 1, b"a%d" % i) for i in range(4)]
    b = [store.save(OTHER, 1, b"b%d" % i) for i in range(2)]
    assert store.ids(SHARD) == a[-KEEP:]
    assert store.ids(OTHER) == b
    assert store.latest(SHARD) == (a[-1], b"a3")
    assert store.latest(OTHER) == (b[-1], b"b1")
    assert store.shards() == sorted([SHARD, OTHER])


def test_shards_lists_only_shards_with_checkpoints(store):
    store.claim("events:9")
    assert store.shards() == []
    store.save("my.topic-x:12", 4, b"x")
    assert store.shards() == ["my.topic-x:12"]


def test_binary_blob_round_trips(store):
    checkpoint_id = store.save(SHARD, 1, BINARY)
    assert store.get(SHARD, checkpoint_id) == BINARY
    assert store.latest(SHARD) == (checkpoint_id, BINARY)


def test_claim_takes_a_new_epoch_each_time(store):
    first = store.claim(SHARD)
    assert store.epoch(SHARD) == first >= 1
    second = store.claim(SHARD)
    assert second > first and store.epoch(SHARD) == second
    assert store.epoch(OTHER) == -1


def test_save_with_an_older_epoch_is_fenced(store):
    stale = store.claim(SHARD)
    owner = store.claim(SHARD)
    newest = store.save(SHARD, owner, b"from the owner")
    with pytest.raises(
        CheckpointFenced, match=f"claimed by epoch {owner}; this worker holds epoch {stale}"
    ) as info:
        store.save(SHARD, stale, b"from a stale worker")
    assert SHARD in str(info.value)
    assert isinstance(info.value, CheckpointError)
    assert store.latest(SHARD) == (newest, b"from the owner")
    assert store.ids(SHARD) == [newest]
    assert store.epoch(SHARD) == owner


def test_the_owner_saves_again_and_again(store):
    epoch = store.claim(SHARD)
    first = store.save(SHARD, epoch, b"a")
    second = store.save(SHARD, epoch, b"b")
    assert first < second
    assert store.latest(SHARD) == (second, b"b")


def test_claim_fences_the_previous_owner(store):
    old = store.claim(SHARD)
    kept = store.save(SHARD, old, b"old owner")
    new = store.claim(SHARD)  # a new owner after a rebalance
    with pytest.raises(CheckpointFenced, match=f"claimed by epoch {new}; this worker holds"):
        store.save(SHARD, old, b"stale")
    assert store.latest(SHARD) == (kept, b"old owner")
    saved = store.save(SHARD, new, b"new owner")
    assert store.latest(SHARD) == (saved, b"new owner")


def test_fencing_is_per_shard(store):
    store.claim(SHARD)
    store.claim(SHARD)
    store.save(OTHER, 1, b"x")
    assert store.epoch(OTHER) == 1


def test_a_stale_owner_cannot_park_or_write_entries(store):
    old = store.claim(SHARD)
    store.save(SHARD, old, b"head 1", {"k1": b"v1"})
    new = store.claim(SHARD)
    with pytest.raises(CheckpointFenced):
        store.park(SHARD, old, {"k1": b"zombie park"})
    with pytest.raises(CheckpointFenced):
        store.save(SHARD, old, b"zombie head", {"k1": b"zombie"}, ["k1"])
    assert store.entry(SHARD, "k1") == b"v1"
    assert store.parked(SHARD, new, "k1") is None


# -- keyed entries ----------------------------------------------------------------------------


def test_entries_are_written_with_their_head(store):
    epoch = store.claim(SHARD)
    assert store.entry(SHARD, "a") is None and store.n_entries(SHARD) == 0
    store.save(SHARD, epoch, b"h1", {"a": b"a1", "b": BINARY})
    assert store.entry(SHARD, "a") == b"a1" and store.entry(SHARD, "b") == BINARY
    store.save(SHARD, epoch, b"h2", {"a": b"a2"})
    assert store.entry(SHARD, "a") == b"a2" and store.entry(SHARD, "b") == BINARY
    assert store.n_entries(SHARD) == 2
    assert store.entry(OTHER, "a") is None


def test_parked_entries_are_promoted_by_the_next_checkpoint(store):
    epoch = store.claim(SHARD)
    store.save(SHARD, epoch, b"h1", {"a": b"a1"})
    store.park(SHARD, epoch, {"a": b"a-parked"})
    store.park(SHARD, epoch, {"c": b"c-parked"})
    assert store.parked(SHARD, epoch, "a") == b"a-parked"
    assert store.entry(SHARD, "a") == b"a1"  # not checkpointed yet
    store.save(SHARD, epoch, b"h2", {}, ["a", "c"])
    assert store.entry(SHARD, "a") == b"a-parked" and store.entry(SHARD, "c") == b"c-parked"
    assert store.parked(SHARD, epoch, "a") is None  # the scratch map starts again


def test_a_new_epoch_never_reads_what_the_old_one_parked(store):
    old = store.claim(SHARD)
    store.park(SHARD, old, {"a": b"parked by a crashed owner"})
    new = store.claim(SHARD)
    assert store.parked(SHARD, new, "a") is None
    store.save(SHARD, new, b"h", {}, ["a"])
    assert store.entry(SHARD, "a") is None


def test_revert_applies_the_undo_records_newest_first(store):
    epoch = store.claim(SHARD)
    one = store.save(SHARD, epoch, b"h1", {"a": b"a1", "b": b"b1"})
    store.save(SHARD, epoch, b"h2", {"a": b"a2", "c": b"c2"})
    store.park(SHARD, epoch, {"b": b"b3"})
    store.save(SHARD, epoch, b"h3", {"a": b"a3"}, ["b"])
    back = store.save(SHARD, epoch, b"rollback of h1", revert_to=one)
    assert store.ids(SHARD) == [one, back]
    assert store.latest(SHARD) == (back, b"rollback of h1")
    assert [store.entry(SHARD, k) for k in "abc"] == [b"a1", b"b1", None]
    store.save(SHARD, epoch, b"h5", {"c": b"c5"})
    assert store.entry(SHARD, "c") == b"c5"


def test_a_second_instance_sees_the_same_data(make_store):
    first = make_store()
    ids = [first.save(SHARD, 2, b"%d" % i) for i in range(4)]
    second = make_store()
    assert second.ids(SHARD) == ids[-KEEP:]
    assert second.latest(SHARD) == (ids[-1], b"3")
    assert second.epoch(SHARD) == 2
    assert second.save(SHARD, 2, b"next") > ids[-1]
    with pytest.raises(CheckpointFenced):
        second.save(SHARD, 1, b"stale")


# -- LocalStore -----------------------------------------------------------------------------


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_local_store_writes_atomically_and_leaves_no_temporary_files(tmp_path: Path):
    store = LocalStore(tmp_path, keep=2)
    for i in range(5):
        store.save(SHARD, 1, b"blob %d" % i)
    store.claim(SHARD)
    files = _all_files(tmp_path)
    assert not [p for p in files if p.name.endswith(".tmp")]
    ckpts = sorted(p.name for p in files if p.suffix == ".ckpt")
    assert ckpts == ["000000000004.ckpt", "000000000005.ckpt"]
    assert (tmp_path / "events_0" / "000000000005.ckpt").read_bytes() == b"blob 4"


def test_local_store_survives_re_instantiation(tmp_path: Path):
    first = LocalStore(tmp_path, keep=3)
    first.save(SHARD, 4, b"a")
    first.save(SHARD, 4, b"b")
    first.save(OTHER, 4, BINARY)
    again = LocalStore(tmp_path, keep=3)
    assert again.shards() == [SHARD, OTHER]
    assert again.ids(SHARD) == [1, 2]
    assert again.latest(SHARD) == (2, b"b")
    assert again.latest(OTHER) == (1, BINARY)
    assert again.epoch(SHARD) == 4
    assert again.save(SHARD, 4, b"c") == 3
    with pytest.raises(CheckpointFenced):
        LocalStore(tmp_path).save(SHARD, 3, b"stale")


def test_local_store_makes_large_pages_and_still_writes_a_file_made_with_small_ones(
        tmp_path: Path):
    """Entries of a few KB share 16 KB pages in a new keys.sqlite; a file made with
    SQLite's default 4 KB pages (by an earlier version) keeps them and works the same."""
    made = LocalStore(tmp_path / "new", keep=3)
    epoch = made.claim(SHARD)
    made.save(SHARD, epoch, b"h1", {"a": b"a1"})
    (folder,) = (tmp_path / "new").iterdir()
    with sqlite3.connect(folder / "keys.sqlite") as db:
        assert db.execute("PRAGMA page_size").fetchone() == (SQLITE_PAGE_SIZE,)

    older = tmp_path / "old" / folder.name
    older.mkdir(parents=True)
    with sqlite3.connect(older / "keys.sqlite") as db:  # the schema as an earlier version made it
        db.execute("PRAGMA page_size = 4096")
        db.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, blob BLOB)")
        db.execute("CREATE TABLE undo (id INTEGER, key TEXT, blob BLOB, PRIMARY KEY (id, key))")
    store = LocalStore(tmp_path / "old", keep=3)
    epoch = store.claim(SHARD)
    one = store.save(SHARD, epoch, b"h1", {"a": b"a1", "b": b"b1"})
    store.save(SHARD, epoch, b"h2", {"a": b"a2" * 3000})
    assert [store.entry(SHARD, k) for k in "ab"] == [b"a2" * 3000, b"b1"]
    store.save(SHARD, epoch, b"back", revert_to=one)
    assert [store.entry(SHARD, k) for k in "ab"] == [b"a1", b"b1"]
    with sqlite3.connect(older / "keys.sqlite") as db:
        assert db.execute("PRAGMA page_size").fetchone() == (4096,)


def test_local_store_holds_a_reserved_shard_until_closed(tmp_path: Path):
    first, second = LocalStore(tmp_path), LocalStore(tmp_path)
    first.reserve(SHARD)
    second.reserve(OTHER)  # another shard of the folder is free
    with pytest.raises(CheckpointError, match=f"in use by another run \\(process {os.getpid()}\\)"):
        second.reserve(SHARD)
    first.close()
    second.reserve(SHARD)
    second.close()


def test_local_store_failed_write_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = LocalStore(tmp_path)
    store.save(SHARD, 1, b"good")

    def crash(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        store.save(SHARD, 1, b"torn")
    assert str(tmp_path) in str(info.value)
    monkeypatch.undo()
    assert store.latest(SHARD) == (1, b"good")
    assert store.ids(SHARD) == [1]


def test_local_store_crash_while_saving_keeps_every_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import stream_learner.stores as stores

    real_replace = stores.os.replace

    def dies_on_rename(src: Any, dst: Any) -> None:
        raise OSError(5, "Input/output error")  # the process dies before the rename

    monkeypatch.setattr(stores.os, "replace", dies_on_rename)
    with pytest.raises(CheckpointError):
        LocalStore(tmp_path).save(SHARD, 1, b"first")
    monkeypatch.setattr(stores.os, "replace", real_replace)
    # nothing half-written is visible: no shard name, no checkpoint
    assert LocalStore(tmp_path).shards() == []
    assert LocalStore(tmp_path).latest(SHARD) is None
    store = LocalStore(tmp_path)
    store.save(SHARD, 1, b"good")
    assert store.latest(SHARD) == (1, b"good")
    assert LocalStore(tmp_path).shards() == [SHARD]


def test_local_store_unwritable_folder_raises_checkpoint_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="checkpoint folder"):
        LocalStore(blocker).save(SHARD, 1, b"x")


# -- RedisStore -----------------------------------------------------------------------------



@pytest.mark.redis
def test_redis_keys_live_under_the_prefix(redis_url: str, redis_prefix: str):
    import redis

    shard = f"t-{uuid.uuid4().hex}:0"
    store = RedisStore(redis_url, redis_prefix, keep=2)
    client = redis.Redis.from_url(redis_url)
    try:
        for i in range(4):
            store.save(shard, 1, b"%d" % i)
        keys = {k.decode() for k in client.scan_iter(match=f"{redis_prefix}:*", count=1000)}
        tagged = f"{redis_prefix}:{{{shard}}}"
        assert keys == {
            f"{tagged}:epoch",
            f"{tagged}:seq",
            f"{tagged}:index",
            f"{tagged}:ckpt:3",
            f"{tagged}:ckpt:4",
            f"{redis_prefix}:shards",
        }
        # nothing about this shard was written anywhere else
        everywhere = {k.decode() for k in client.scan_iter(match=f"*{shard.split(':')[0]}*", count=1000)}
        assert everywhere <= keys
    finally:
        client.close()
        store.close()


@pytest.mark.redis
def test_redis_save_is_atomic_under_concurrent_writers(redis_url: str, redis_prefix: str):
    import redis

    n_threads, per_thread = 4, 15
    returned: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        store = RedisStore(redis_url, redis_prefix, keep=KEEP)
        try:
            for i in range(per_thread):
                checkpoint_id = store.save(SHARD, 1, b"w%d-%d" % (n, i))
                with lock:
                    returned.append(checkpoint_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    total = n_threads * per_thread
    assert sorted(returned) == list(range(1, total + 1))  # every save got its own id
    store = RedisStore(redis_url, redis_prefix, keep=KEEP)
    client = redis.Redis.from_url(redis_url)
    try:
        assert store.ids(SHARD) == list(range(total - KEEP + 1, total + 1))
        ckpt_keys = list(client.scan_iter(match=f"{redis_prefix}:{{{SHARD}}}:ckpt:*", count=1000))
        assert len(ckpt_keys) == KEEP
        assert client.zcard(f"{redis_prefix}:{{{SHARD}}}:index") == KEEP
        assert int(client.get(f"{redis_prefix}:{{{SHARD}}}:seq")) == total
    finally:
        client.close()
        store.close()


@pytest.mark.redis
def test_redis_stale_writer_is_fenced_while_a_new_owner_writes(redis_url: str, redis_prefix: str):
    old = RedisStore(redis_url, redis_prefix)
    new = RedisStore(redis_url, redis_prefix)
    try:
        mine = old.claim(SHARD)
        old.save(SHARD, mine, b"old", {"k": b"old entry"})
        theirs = new.claim(SHARD)
        kept = new.save(SHARD, theirs, b"new", {"k": b"new entry"})
        for action in (
            lambda: old.save(SHARD, mine, b"stale", {"k": b"stale entry"}),
            lambda: old.park(SHARD, mine, {"k": b"stale park"}),
        ):
            with pytest.raises(
                CheckpointFenced, match=f"claimed by epoch {theirs}; this worker holds epoch {mine}"
            ):
                action()
        assert new.entry(SHARD, "k") == b"new entry"
        assert new.latest(SHARD) == (kept, b"new")
    finally:
        old.close()
        new.close()


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


STORE_CALLS: dict[str, Callable[[RedisStore], Any]] = {
    "ping": lambda s: s.ping(),
    "save": lambda s: s.save(SHARD, 1, b"x"),
    "claim": lambda s: s.claim(SHARD),
    "park": lambda s: s.park(SHARD, 1, {"k": b"x"}),
    "entry": lambda s: s.entry(SHARD, "k"),
    "latest": lambda s: s.latest(SHARD),
    "get": lambda s: s.get(SHARD, 1),
    "ids": lambda s: s.ids(SHARD),
    "epoch": lambda s: s.epoch(SHARD),
    "shards": lambda s: s.shards(),
}


@pytest.mark.parametrize("call", list(STORE_CALLS))
def test_redis_unreachable_raises_connection_failed_naming_the_address(call: str):
    port = _closed_port()
    store = RedisStore(f"redis://app:hunter2-secret@127.0.0.1:{port}/0", "p", timeout_s=2.0)
    try:
        with pytest.raises(ConnectionFailed) as info:
            STORE_CALLS[call](store)
    finally:
        store.close()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "cannot reach Redis at redis://app:***@" in message
    assert "hunter2" not in message
    assert "hunter2" not in repr(info.value.__cause__)


@pytest.mark.redis
def test_redis_wrong_password_raises_connection_failed_without_the_password(redis_url: str):
    user = f"nobody-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, "p", username=user, password="hunter2-secret", timeout_s=2.0)
    try:
        with pytest.raises(ConnectionFailed, match="refused the credentials") as info:
            store.save(SHARD, 1, b"x")
    finally:
        store.close()
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    assert host_port in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.redis
def test_redis_wrong_password_in_the_url_is_redacted(redis_url: str):
    url = redis_url.replace("redis://", "redis://nobody:hunter2-secret@", 1)
    store = RedisStore(url, "p", timeout_s=2.0)
    try:
        with pytest.raises(ConnectionFailed, match="refused the credentials") as info:
            store.ping()
    finally:
        store.close()
    assert "nobody:***@" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert store.url == redact_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://app@cache:6379/0", "redis://app@cache:6379/0"),
        ("redis://app:s3cret@cache:6379/0", "redis://app:***@cache:6379/0"),
        ("rediss://:s3cret@cache:6380/1", "rediss://:***@cache:6380/1"),
        ("redis://app:p@ss@cache:6379", "redis://app:***@cache:6379"),
        ("redis://app:s3cret@[::1]:6379/0", "redis://app:***@[::1]:6379/0"),
    ],
)
def test_redact_url(url: str, expected: str):
    assert redact_url(url) == expected


def test_redact_url_hides_a_password_in_the_query_string():
    port = _closed_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0?username=app&password=hunter2-secret", "p")
    try:
        with pytest.raises(ConnectionFailed) as info:
            store.ping()
    finally:
        store.close()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_fetch_reads_entries_and_parks_in_one_call(store):
    epoch = store.claim(SHARD)
    store.save(SHARD, epoch, b"h1", {"a": b"a1", "b": b"b1"})
    store.park(SHARD, epoch, {"b": b"b-parked", "c": b"c-parked"})
    got = store.fetch(SHARD, epoch, ["a", "missing"], ["b", "c", "gone"])
    assert got == {"a": b"a1", "b": b"b-parked", "c": b"c-parked"}
    assert store.fetch(SHARD, epoch, [], []) == {}
    many = [f"k{i}" for i in range(1200)]  # more than one SQLite chunk
    store.save(SHARD, epoch, b"h2", {k: k.encode() for k in many})
    assert store.fetch(SHARD, epoch, many, []) == {k: k.encode() for k in many}


def test_a_checkpoint_of_thousands_of_binary_entries_round_trips_with_its_parks(store):
    """On Redis, a command of more than PACK_SLICE arguments goes out packed in slices."""
    epoch = store.claim(SHARD)
    n = 3 * PACK_SLICE + 7
    entries = {f"sensor-{i}": BINARY[i % 7 :] * (1 + i % 3) for i in range(n)}
    parks = {f"parked-{i}": b"\r\n" + BINARY[: i % 11] for i in range(n)}
    store.park(SHARD, epoch, parks)
    first = store.save(SHARD, epoch, b"h1", entries, list(parks))
    assert store.fetch(SHARD, epoch, [*entries, *parks], []) == entries | parks
    store.save(SHARD, epoch, b"h2", {k: b"new" for k in entries})
    store.save(SHARD, epoch, b"h3", {}, revert_to=first)
    assert store.fetch(SHARD, epoch, list(entries), []) == entries


def _arguments(n: int) -> tuple[Any, ...]:
    """A command of ``n`` arguments after its name, of every type redis-py sends."""
    kinds = [b"", BINARY, "str \u00e9", 7, -3, 2.5, bytearray(b"ba\r\n"), memoryview(b"mv")]
    return ("EVALSHA", *(kinds[i % len(kinds)] for i in range(n)))


@pytest.mark.parametrize("n", [0, 1, PACK_SLICE - 1, PACK_SLICE, PACK_SLICE + 1, 4 * PACK_SLICE + 3])
def test_sliced_packer_sends_the_bytes_hiredis_packs_in_one_call(n: int):
    import hiredis

    args = _arguments(n)
    chunks = SlicedPacker().pack(*args)
    expected = hiredis.pack_command(
        tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args))
    assert b"".join(chunks) == expected
    # one chunk per slice of arguments (after the header of a sliced command), none bigger
    assert len(chunks) == (1 if n + 1 <= PACK_SLICE else 1 + -(-(n + 1) // PACK_SLICE))
    assert max(map(len, chunks)) <= len(hiredis.pack_command((BINARY,))) * PACK_SLICE


def test_sliced_packer_splits_a_command_of_several_words_as_redis_py_does():
    from redis.connection import HiredisRespSerializer

    for args in (("CONFIG GET", "maxmemory"), (b"CLIENT SETINFO", "LIB-NAME", "x")):
        assert b"".join(SlicedPacker().pack(*args)) == b"".join(HiredisRespSerializer().pack(*args))


def test_sliced_packer_refuses_an_argument_it_cannot_pack_with_redis_data_error():
    from redis.exceptions import DataError

    with pytest.raises(DataError):
        SlicedPacker().pack("SET", "k", object())
    with pytest.raises(DataError):
        SlicedPacker().pack("HSET", *(["k"] * PACK_SLICE), object())


@pytest.mark.redis
def test_redis_store_packs_its_commands_in_slices(redis_url: str, redis_prefix: str):
    store = RedisStore(redis_url, redis_prefix)
    try:
        connection = store._redis.connection_pool.get_connection()
        try:
            assert isinstance(connection._command_packer, SlicedPacker)
        finally:
            store._redis.connection_pool.release(connection)
    finally:
        store.close()
