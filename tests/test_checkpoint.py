"""The signed checkpoint envelope: round trip, refusal, and never unpickling a refused payload."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import platform
import struct
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_learner import __version__
from stream_learner import checkpoint as checkpoint_module
from stream_learner.checkpoint import FORMAT_VERSION, EnvelopeCodec, Snapshot, build_versions
from stream_learner.errors import CheckpointError, CheckpointRefused

KEY = b"signing-key-0123456789abcdef0123"
OTHER_KEY = b"another-key-0123456789abcdef0123"
CONFIG = "c0ffee" * 10 + "abcd"
MAGIC = b"SLCKPT1\n"
MAC_SIZE = 32
OFFSETS = {("events", 3): 1234, ("labels", 3): 77}
STATE = {"weights": [0.25, -1.5, 3.0], "n": 42, "name": "phishing"}
CREATED = 1_764_115_200.25


def codec(key: bytes = KEY, config_hash: str = CONFIG, **versions: str) -> EnvelopeCodec:
    return EnvelopeCodec(key, config_hash, versions={**build_versions(), **versions} if versions else None)


def sealed(c: EnvelopeCodec | None = None, state: Any = STATE, **kw: Any) -> bytes:
    return (c or codec()).seal("events:3", OFFSETS, 5, state, created_at=CREATED, **kw)


def split(blob: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """Header, payload and MAC of an envelope (no verification)."""
    (head_len,) = struct.unpack_from(">I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    header = orjson.loads(blob[start : start + head_len])
    return header, blob[start + head_len : -MAC_SIZE], blob[-MAC_SIZE:]


def forge(header: dict[str, Any], payload: bytes, key: bytes = KEY) -> bytes:
    """An envelope with exactly this header and payload, signed with ``key``."""
    head = orjson.dumps(header)
    body = MAGIC + struct.pack(">I", len(head)) + head + payload
    return body + hmac.new(key, body, hashlib.sha256).digest()


def resigned(blob: bytes, change: Callable[[dict[str, Any]], None], key: bytes = KEY) -> bytes:
    """``blob`` with its header changed by ``change``, correctly signed again."""
    header, payload, _mac = split(blob)
    change(header)
    return forge(header, payload, key)


class LoadsSpy:
    """Stands in for ``pickle`` inside stream_learner.checkpoint and records every ``loads``."""

    def __init__(self) -> None:
        self.calls = 0

    def loads(self, data: bytes) -> Any:
        self.calls += 1
        return pickle.loads(data)


@pytest.fixture
def loads_spy(monkeypatch: pytest.MonkeyPatch) -> LoadsSpy:
    spy = LoadsSpy()
    fake = types.SimpleNamespace(
        dumps=pickle.dumps, loads=spy.loads, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL
    )
    monkeypatch.setattr(checkpoint_module, "pickle", fake)
    return spy


# -- round trip ---------------------------------------------------------------------------


def test_seal_open_round_trip():
    blob = sealed()
    snap = codec().open(blob)
    assert isinstance(snap, Snapshot)
    assert snap.state == STATE
    assert snap.shard == "events:3"
    assert snap.offsets == OFFSETS
    assert snap.epoch == 5
    assert snap.created_at == CREATED


def test_header_fields():
    blob = sealed()
    header = codec().open(blob).header
    _head, payload, _mac = split(blob)
    assert header["format_version"] == FORMAT_VERSION == 2
    assert header["versions"] == {
        "river": build_versions()["river"],
        "python": platform.python_version(),
        "service": __version__,
    }
    assert header["config_hash"] == CONFIG
    assert header["shard"] == "events:3"
    assert header["offsets"] == [["events", 3, 1234], ["labels", 3, 77]]
    assert header["epoch"] == 5
    assert header["created_at"] == CREATED
    assert header["payload_size"] == len(payload)
    assert header["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert pickle.loads(payload) == STATE


def test_layout_is_magic_length_header_payload_mac():
    blob = sealed()
    assert blob.startswith(MAGIC)
    assert hmac.compare_digest(blob[-MAC_SIZE:], hmac.new(KEY, blob[:-MAC_SIZE], hashlib.sha256).digest())
    header, payload, _mac = split(blob)
    assert len(blob) == len(MAGIC) + 4 + len(orjson.dumps(header)) + len(payload) + MAC_SIZE


@pytest.mark.parametrize("size", [16, 63, 64, 65, 200])
def test_checkpoints_and_entries_carry_the_standard_hmac_for_keys_of_any_length(size: int):
    key = bytes(range(256))[:size]
    codec = EnvelopeCodec(key, "cfg")
    for blob in (sealed(codec),
                 codec.seal_entry("events:3", "pump-7", b"payload")):
        assert blob[-MAC_SIZE:] == hmac.new(key, blob[:-MAC_SIZE], hashlib.sha256).digest()
    assert codec.open_entry("events:3", "pump-7", codec.seal_entry("events:3", "pump-7", b"p")) == b"p"


def test_extra_header_fields_are_kept():
    blob = sealed(extra={"resume_at_committed": True, "rollback_of": 7})
    header = codec().open(blob).header
    assert header["resume_at_committed"] is True
    assert header["rollback_of"] == 7


def test_round_trip_of_a_real_learner():
    from stream_learner.learner import Learner
    from stream_learner.models import ModelSpec
    from stream_learner.settings import ModelSettings

    spec = ModelSpec.from_settings(ModelSettings())
    c = EnvelopeCodec(KEY, spec.config_hash)
    learner = Learner(spec)
    for i in range(20):
        learner.model.learn_one({"x": float(i), "y": float(i % 3)}, float(2 * i))
    restored = c.open(c.seal("events:0", {("events", 0): 20}, 1, learner, created_at=0.0)).state
    probe = [{"x": 1.5, "y": 2.0}, {"x": -3.0, "y": 0.0}]
    assert [restored.model.predict_one(x) for x in probe] == [learner.model.predict_one(x) for x in probe]


def test_key_shorter_than_16_bytes_is_rejected():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        EnvelopeCodec(b"k" * 15, CONFIG)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        EnvelopeCodec(b"", CONFIG)
    EnvelopeCodec(b"k" * 16, CONFIG)  # exactly 16 is enough


# -- refusals -----------------------------------------------------------------------------


def test_wrong_key_is_refused():
    with pytest.raises(CheckpointRefused, match="signature does not verify") as info:
        codec(OTHER_KEY).open(sealed())
    assert "wrong key or tampered data" in str(info.value)
    assert isinstance(info.value, CheckpointError)


def _positions(blob: bytes) -> dict[str, int]:
    header, payload, _mac = split(blob)
    head_len = len(orjson.dumps(header))
    head_start = len(MAGIC) + 4
    pay_start = head_start + head_len
    return {
        "magic_first": 0,
        "magic_last": len(MAGIC) - 1,
        "header_length": len(MAGIC) + 3,
        "header_first": head_start,
        "header_middle": head_start + head_len // 2,
        "header_last": pay_start - 1,
        "payload_first": pay_start,
        "payload_middle": pay_start + len(payload) // 2,
        "payload_last": len(blob) - MAC_SIZE - 1,
        "mac_first": len(blob) - MAC_SIZE,
        "mac_last": len(blob) - 1,
    }


@pytest.mark.parametrize("where", list(_positions(sealed())))
@pytest.mark.parametrize("mask", [0x01, 0xFF])
def test_one_flipped_byte_is_refused(where: str, mask: int, loads_spy: LoadsSpy):
    blob = bytearray(sealed())
    blob[_positions(bytes(blob))[where]] ^= mask
    with pytest.raises(CheckpointRefused, match=r"signature does not verify|bad magic bytes"):
        codec().open(bytes(blob))
    assert loads_spy.calls == 0


def test_every_single_flipped_byte_is_refused(loads_spy: LoadsSpy):
    good = sealed(state=[1, 2])
    c = codec()
    for i in range(len(good)):
        blob = bytearray(good)
        blob[i] ^= 0x80
        with pytest.raises(CheckpointRefused):
            c.open(bytes(blob))
        with pytest.raises(CheckpointRefused):
            c.read_header(bytes(blob))
    assert loads_spy.calls == 0


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 11, 12, 40, -33, -32, -1])
def test_truncated_blob_is_refused(cut: int, loads_spy: LoadsSpy):
    blob = sealed()
    with pytest.raises(CheckpointRefused, match=r"signature does not verify|bad magic bytes"):
        codec().open(blob[:cut])
    assert loads_spy.calls == 0


def test_appended_bytes_are_refused(loads_spy: LoadsSpy):
    with pytest.raises(CheckpointRefused, match="signature does not verify"):
        codec().open(sealed() + b"\x00")
    assert loads_spy.calls == 0


def test_not_a_checkpoint_is_refused():
    with pytest.raises(CheckpointRefused, match="not a stream_learner checkpoint"):
        codec().open(pickle.dumps(STATE))
    with pytest.raises(CheckpointRefused, match="bad magic bytes"):
        codec().open(b"SLCKPT2\n" + sealed()[len(MAGIC) :])


@pytest.mark.parametrize("other", [0, 1, 3, "2", None])
def test_other_format_version_is_refused(other: Any, loads_spy: LoadsSpy):
    blob = resigned(sealed(), lambda h: h.__setitem__("format_version", other))
    with pytest.raises(CheckpointRefused, match=f"checkpoint format {other!r} is not 2"):
        codec().open(blob)
    with pytest.raises(CheckpointRefused, match="checkpoint format"):
        codec().read_header(blob)
    assert loads_spy.calls == 0


def test_missing_format_version_is_refused(loads_spy: LoadsSpy):
    blob = resigned(sealed(), lambda h: h.pop("format_version"))
    with pytest.raises(CheckpointRefused, match="checkpoint format None is not 2"):
        codec().open(blob)
    assert loads_spy.calls == 0


def test_payload_that_does_not_match_its_digest_is_refused(loads_spy: LoadsSpy):
    # Only a key holder can produce this (the MAC is valid): a buggy writer, not an attacker.
    header, _payload, _mac = split(sealed())
    blob = forge(header, pickle.dumps({"other": "state"}))
    with pytest.raises(CheckpointRefused, match="payload does not match its digest"):
        codec().open(blob)
    assert loads_spy.calls == 0


@pytest.mark.parametrize("component", ["river", "python", "service"])
def test_each_version_mismatch_is_refused_with_a_clear_message(component: str, loads_spy: LoadsSpy):
    writer = codec(**{component: "0.0.1-old"})
    blob = sealed(writer)
    assert writer.open(blob).state == STATE  # the writer itself can read it
    loads_spy.calls = 0
    running = build_versions()[component]
    with pytest.raises(CheckpointRefused) as info:
        codec().open(blob)
    message = str(info.value)
    assert f"checkpoint was written with {component} '0.0.1-old'" in message
    assert f"this worker runs {running!r}" in message
    assert "matching build" in message
    assert loads_spy.calls == 0


@pytest.mark.parametrize("component", ["river", "python", "service"])
def test_version_missing_from_the_header_is_refused(component: str, loads_spy: LoadsSpy):
    blob = resigned(sealed(), lambda h: h["versions"].pop(component))
    with pytest.raises(CheckpointRefused, match=f"written with {component} None"):
        codec().open(blob)
    assert loads_spy.calls == 0


def test_config_hash_mismatch_is_refused(loads_spy: LoadsSpy):
    blob = sealed(codec(config_hash="deadbeef" * 8))
    with pytest.raises(CheckpointRefused, match="another model configuration") as info:
        codec().open(blob)
    assert "deadbeefdead" in str(info.value)
    assert CONFIG[:12] in str(info.value)
    assert loads_spy.calls == 0


def test_a_verified_compatible_checkpoint_is_unpickled_exactly_once(loads_spy: LoadsSpy):
    assert codec().open(sealed()).state == STATE
    assert loads_spy.calls == 1


# -- read_header ----------------------------------------------------------------------------


def test_read_header_verifies_but_does_not_unpickle(loads_spy: LoadsSpy):
    blob = sealed()
    header = codec().read_header(blob)
    assert header["offsets"] == [["events", 3, 1234], ["labels", 3, 77]]
    assert header["epoch"] == 5
    assert loads_spy.calls == 0
    with pytest.raises(CheckpointRefused, match="signature does not verify"):
        codec(OTHER_KEY).read_header(blob)


def test_read_header_shows_a_checkpoint_of_another_build_without_loading_it(loads_spy: LoadsSpy):
    # Operators list checkpoints of older builds; only open() enforces compatibility.
    blob = sealed(codec(river="0.0.1"))
    assert codec().read_header(blob)["versions"]["river"] == "0.0.1"
    assert loads_spy.calls == 0


# -- a malicious payload is never executed ---------------------------------------------------


class Evil:
    """Unpickling this creates a file: proof that a payload was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_the_evil_payload_really_runs_when_unpickled(tmp_path: Path):
    proof = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(proof)))
    assert proof.exists()


def _evil_blob(proof: Path, sign_with: bytes | None) -> bytes:
    """A well formed envelope whose payload writes ``proof``; MAC by ``sign_with`` or random."""
    header, _payload, _mac = split(sealed())
    payload = pickle.dumps(Evil(proof))
    header["payload_size"] = len(payload)
    header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    if sign_with is not None:
        return forge(header, payload, sign_with)
    blob = forge(header, payload, KEY)
    return blob[:-MAC_SIZE] + bytes(MAC_SIZE)


@pytest.mark.parametrize("sign_with", [OTHER_KEY, b"", None], ids=["attacker-key", "empty-key", "zero-mac"])
def test_malicious_payload_with_a_wrong_signature_is_never_unpickled(
    tmp_path: Path, sign_with: bytes | None, loads_spy: LoadsSpy
):
    proof = tmp_path / "pwned"
    blob = _evil_blob(proof, sign_with)
    for read in (codec().open, codec().read_header):
        with pytest.raises(CheckpointRefused, match="signature does not verify"):
            read(blob)
    assert loads_spy.calls == 0
    assert not proof.exists()


def test_malicious_payload_with_a_wrong_signature_is_refused_by_the_real_pickle(tmp_path: Path):
    # No spy here: the real pickle module, so a call would actually create the file.
    proof = tmp_path / "pwned"
    with pytest.raises(CheckpointRefused):
        codec().open(_evil_blob(proof, OTHER_KEY))
    assert not proof.exists()


def test_validly_signed_payload_of_another_build_is_never_unpickled(tmp_path: Path):
    proof = tmp_path / "pwned"
    blob = resigned(_evil_blob(proof, KEY), lambda h: h["versions"].__setitem__("river", "0.0.1"))
    with pytest.raises(CheckpointRefused, match="written with river"):
        codec().open(blob)
    blob = resigned(_evil_blob(proof, KEY), lambda h: h.__setitem__("config_hash", "0" * 64))
    with pytest.raises(CheckpointRefused, match="another model configuration"):
        codec().open(blob)
    assert not proof.exists()
