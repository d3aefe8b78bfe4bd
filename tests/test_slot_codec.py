"""Per-key slots as flat entries (``stream_learner.slot_codec``): exact, and pickle's equal."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_learner.drift.monitors import Rules, SchemaMonitor
from stream_learner.errors import CheckpointError
from stream_learner.learner import Learner, Outcome
from stream_learner.models import ModelSpec
from stream_learner.scopes import KeyedModels, Slot
from stream_learner.settings import DriftSettings, ModelSettings
from stream_learner.slot_codec import FLAT, MAX_LAYOUTS, MAX_NODES, SlotCodec, describe
from tests.support.learners import CLASSIFIER, REGRESSOR, run_outcomes
from tests.support.streams import friedman

TREE = ({"step": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 20}},)
FOREST = (  # its trees are lists of nodes
    {"step": "preprocessing.MinMaxScaler"},
    {"step": "anomaly.HalfSpaceTrees", "params": {"n_trees": 5, "height": 6, "window_size": 50}},
)


def shifted(events: list[dict[str, Any]], at: int, task: str) -> list[dict[str, Any]]:
    """The events with a concept change at ``at`` (labels flipped, or moved up by 15)."""
    out = []
    for i, event in enumerate(events):
        if i >= at:
            label = event["label"]
            label = (1 - label) if task == "classification" else label + 15.0
            event = {**event, "label": label}
        out.append(event)
    return out


def keyed_run(pipeline: Any, task: str, events: list[dict[str, Any]], max_resident: int,
              action: str = "alert") -> tuple[Learner, list[Outcome]]:
    spec = ModelSpec.from_settings(ModelSettings(
        task=task, pipeline=pipeline, scope="key", max_resident=max_resident))
    learner = Learner(spec, drift=DriftSettings(action=action, warmup_labels=50))
    return learner, run_outcomes(learner, events, task)


def stream(task: str, n: int = 3000, keys: int = 6) -> list[dict[str, Any]]:
    """Friedman events; for classification the label is whether x0 + x1 > 1."""
    events = friedman(n, keys)
    if task == "classification":
        events = [{**e, "label": int(e["features"]["0"] + e["features"]["1"] > 1.0)}
                  for e in events]
    return shifted(events, n // 2, task)


@pytest.mark.parametrize("action", ["alert", "reset", "challenger"])
@pytest.mark.parametrize(("pipeline", "task"), [(REGRESSOR, "regression"),
                                                (CLASSIFIER, "classification")])
def test_parked_slots_are_flat_and_change_no_output(pipeline: Any, task: str, action: str):
    events = stream(task)
    _, straight = keyed_run(pipeline, task, events, max_resident=100, action=action)
    learner, parked = keyed_run(pipeline, task, events, max_resident=1, action=action)
    models = learner.models
    assert isinstance(models, KeyedModels)
    assert models.n_evicted > 2000  # nearly every event loads its key's slot
    assert parked == straight
    assert any(o[3] for o in parked), "the shift should raise alerts"
    # the fast path was taken: flat entries, a handful of layouts, no slot pickled whole
    assert all(entry[:1] == FLAT for entry in models.parked.values())
    assert 1 <= len(models.codec.layouts) <= 3
    assert models.codec.n_pickled == 0


def state_of(obj: Any, depth: int = 0) -> Any:
    """A comparable picture of what pickle would keep of ``obj`` (floats bit for bit)."""
    if depth > 60:
        raise RecursionError("state_of went too deep")
    if obj is None or isinstance(obj, (bool, int, str, bytes)):
        return obj
    if isinstance(obj, float):
        return ("float", obj.hex() if not math.isnan(obj) else "nan")
    if isinstance(obj, type):
        return ("type", obj.__module__, obj.__qualname__)
    if type(obj) in (list, tuple):
        return (type(obj).__name__, [state_of(v, depth + 1) for v in obj])
    if type(obj) in (set, frozenset):
        return (type(obj).__name__, sorted(repr(state_of(v, depth + 1)) for v in obj))
    if type(obj) is dict:
        return ("dict", [(state_of(k, depth + 1), state_of(v, depth + 1))
                         for k, v in obj.items()])
    reduced = obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    parts = [state_of(part, depth + 1) if not callable(part) else repr(part)
             for part in reduced[1:3]]
    extra = [state_of(list(it), depth + 1) for it in reduced[3:5] if it is not None]
    return (type(obj).__module__, type(obj).__qualname__, parts, extra)


@pytest.mark.parametrize(("pipeline", "task"), [(REGRESSOR, "regression"),
                                                (CLASSIFIER, "classification"),
                                                (TREE, "classification")])
def test_a_decoded_slot_holds_what_unpickling_gives(pipeline: Any, task: str):
    learner, _ = keyed_run(pipeline, task, stream(task, 1200, keys=4), max_resident=100,
                           action="reset")
    codec = SlotCodec()
    slots = list(learner.models.resident())
    entries = [codec.encode(slot) for slot in slots]
    for slot, entry in zip(slots, entries, strict=True):
        decoded = codec.decode(entry)
        assert state_of(decoded) == state_of(pickle.loads(pickle.dumps(slot)))
        codec.recycle(decoded)  # the next key is written into this one's objects
    # a codec read back from a checkpoint head decodes the same entries
    copy = pickle.loads(pickle.dumps(codec))
    assert [state_of(copy.decode(e)) for e in entries] == [state_of(s) for s in slots]


def test_a_grown_tree_stays_exact_whatever_its_shape():
    events = stream("classification", 2000, keys=3)
    _, straight = keyed_run(TREE, "classification", events, max_resident=100)
    learner, parked = keyed_run(TREE, "classification", events, max_resident=1)
    assert parked == straight
    assert len(learner.models.codec.layouts) <= MAX_LAYOUTS


def test_a_forest_in_a_list_is_data_and_a_huge_graph_is_pickled_whole():
    spec = ModelSpec.from_settings(ModelSettings(task="anomaly", pipeline=FOREST,
                                                 anomaly_quantile=0.9))
    slot = Slot(spec.build())
    codec = SlotCodec()
    entry = codec.encode(slot)  # the trees are in lists: values, not nodes
    assert entry[:1] == FLAT and state_of(codec.decode(entry)) == state_of(slot)
    huge = Shape(parts={f"p{i}": Shape(x=float(i)) for i in range(MAX_NODES)})
    assert describe(Slot(huge)) is None
    entry = codec.encode(Slot(huge))
    assert entry[:1] != FLAT and codec.n_pickled == 1
    assert state_of(codec.decode(entry)) == state_of(Slot(huge))


def test_slots_without_a_layout_are_walked_a_bounded_number_of_times(monkeypatch):
    import stream_learner.slot_codec as slot_codec

    walks = []
    monkeypatch.setattr(slot_codec, "describe", lambda slot: walks.append(slot))
    codec = SlotCodec()
    for i in range(3 * MAX_LAYOUTS):
        assert codec.encode(Slot(Shape(x=float(i))))[:1] != FLAT
    assert len(walks) == MAX_LAYOUTS and codec.n_pickled == 3 * MAX_LAYOUTS


class Shape:
    """A model whose attributes differ from slot to slot."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


def test_beyond_max_layouts_slots_are_pickled_whole():
    codec = SlotCodec()
    slots = [Slot(Shape(**{f"a{i}": float(i)}), n_learned=i) for i in range(MAX_LAYOUTS + 3)]
    entries = [codec.encode(slot) for slot in slots]
    assert [e[:1] == FLAT for e in entries] == [True] * MAX_LAYOUTS + [False] * 3
    assert codec.n_pickled == 3
    for slot, entry in zip(slots, entries, strict=True):
        assert state_of(codec.decode(entry)) == state_of(slot)


def test_an_entry_of_an_unknown_layout_is_refused():
    entry = SlotCodec().encode(Slot(Shape(w=1.0)))
    with pytest.raises(CheckpointError, match="unknown slot layout"):
        SlotCodec().decode(entry)


def test_a_slot_pickled_whole_before_loads_as_it_was():
    slot = Slot(Shape(w=[1.0, 2.0]), n_learned=3)
    assert state_of(SlotCodec().decode(pickle.dumps(slot))) == state_of(slot)


class Restoring:
    """Restores itself through __setstate__ (as River's StandardScaler does)."""

    def __init__(self, partner: Any = None) -> None:
        self.count = 0
        self.partner = partner

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("count", 0)
        self.__dict__.update(state)


def test_shapes_a_layout_cannot_carry_exactly_are_refused():
    def local_class() -> Any:
        class Local:
            pass
        return Local()

    assert describe(Slot(local_class())) is None
    # a node restored through its own __setstate__ may hold no structure
    model = Shape(step=Shape(x=1.0))
    model.back = Restoring(partner=model.step)
    assert describe(Slot(model)) is None
    # a data value sharing a mutable container with the structure
    box: list[float] = []
    aliased = Shape(step=Shape(x=box))
    aliased.plan = (aliased.step, box)
    assert describe(Slot(aliased)) is None
    # without the alias the same shape is fine, and the plan is structure
    fine = Shape(step=Shape(x=[]))
    fine.plan = (fine.step,)
    nodes = describe(Slot(fine))
    assert nodes is not None and [n.data for n in nodes] == [
        ("n_learned", "generation", "drift"), (), ("x",)]


class Bag(dict):  # type: ignore[type-arg]
    """A dict with attributes: its items are not attributes, so it is data."""


def test_a_dict_subclass_with_attributes_is_written_whole():
    bag = Bag(w=1.5)
    bag.seen = 3
    slot = Slot(Shape(weights=bag))
    nodes = describe(slot)
    assert nodes is not None and [n.qualname for n in nodes] == ["Slot", "Shape"]
    codec = SlotCodec()
    restored = codec.decode(codec.encode(slot))
    assert restored.model.weights == {"w": 1.5} and restored.model.weights.seen == 3


def test_a_map_of_nodes_keeps_its_order():
    codec = SlotCodec()
    first = Slot(Shape(steps={"a": Shape(x=1.0), "b": Shape(x=2.0)}))
    swapped = Slot(Shape(steps={"b": Shape(x=3.0), "a": Shape(x=4.0)}))
    codec.encode(first)
    restored = codec.decode(codec.encode(swapped))
    assert [(k, v.x) for k, v in restored.model.steps.items()] == [("b", 3.0), ("a", 4.0)]
    assert len(codec.layouts) == 2


class Private:
    """Slots, one of them private (stored under a mangled name)."""

    __slots__ = ("__secret", "shown")

    def __init__(self, secret: float, shown: float) -> None:
        self.__secret = secret
        self.shown = shown

    @property
    def secret(self) -> float:
        return self.__secret


class Both(Shape):
    """A __dict__ and a slot: pickle keeps the two apart."""

    __slots__ = ("extra",)


def test_slots_are_carried_under_the_names_pickle_uses_or_left_to_pickle():
    codec = SlotCodec()
    codec.encode(Slot(Shape(p=Private(0.5, 0.5))))  # the layout's template
    restored = codec.decode(codec.encode(Slot(Shape(p=Private(2.5, 1.5)))))
    assert (restored.model.p.secret, restored.model.p.shown) == (2.5, 1.5)
    half = Private.__new__(Private)
    half.shown = 1.0  # an unset slot: the object is data, pickled with the rest
    both = Both(w=1.0)
    both.extra = 7
    for model in (Shape(p=half), Shape(b=both)):
        nodes = describe(Slot(model))
        assert nodes is not None and [n.qualname for n in nodes] == ["Slot", "Shape"]
        assert state_of(codec.decode(codec.encode(Slot(model)))) == state_of(Slot(model))


def test_a_node_with_its_own_setstate_gets_its_state_through_it():
    codec = SlotCodec()
    slot = Slot(Shape(scaler=Restoring()))
    slot.model.scaler.count = 7
    restored = codec.decode(codec.encode(slot))
    assert restored.model.scaler.count == 7
    assert state_of(restored) == state_of(slot)


_FEATURE_VALUES = st.sampled_from([1.0, 2, True, "a", None])
_EVENTS = st.lists(st.dictionaries(st.sampled_from("abcd"), _FEATURE_VALUES, max_size=4),
                   min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(events=_EVENTS, cuts=st.sets(st.integers(0, 39)), grace=st.integers(0, 3))
def test_a_schema_monitor_restored_anywhere_reports_what_an_uninterrupted_one_does(
        events: list[dict[str, Any]], cuts: set[int], grace: int) -> None:
    """Its feature-set caches are not checkpointed: a monitor restored (pickled whole,
    or as a slot entry) before any event finds the same changes and ends in the same state."""
    rules = Rules(cooldown=0, resolve_after=3)
    codec = SlotCodec()
    whole, restored = SchemaMonitor(), SchemaMonitor()
    for i, features in enumerate(events):
        at = (float(i), "events", 0, i)
        if i in cuts:
            restored = (pickle.loads(pickle.dumps(restored)) if i % 2
                        else codec.decode(codec.encode(Slot(restored))).model)
            assert not restored.seen and not restored.known
        assert restored.update(features, at, rules, grace) == whole.update(features, at, rules, grace)
    assert restored == whole


def test_the_schema_monitor_writes_no_cache_and_reads_pickles_that_kept_one():
    monitor = SchemaMonitor()
    monitor.update({"a": 1.0}, (0.0, "events", 0, 0), Rules(0, 10), grace=0)
    assert monitor.seen and monitor.known
    assert b"builtins" not in pickle.dumps(monitor)  # no type object is written
    assert not pickle.loads(pickle.dumps(monitor)).known
    entry = SlotCodec().encode(Slot(monitor))
    assert len(entry) < len(pickle.dumps(Slot(monitor)))
    for kept in ({**monitor.__dict__, "seen": set(monitor.seen), "known": set(monitor.known)},
                 {k: v for k, v in monitor.__dict__.items() if k != "known"}):
        older = SchemaMonitor.__new__(SchemaMonitor)
        older.__setstate__(kept)
        assert older == monitor and not older.seen and not older.known


def test_a_head_written_before_slots_were_flat_gets_a_codec():
    spec = ModelSpec.from_settings(ModelSettings(scope="key"))
    state = KeyedModels(spec, 10).__getstate__()
    del state["codec"]
    models = KeyedModels.__new__(KeyedModels)
    models.__setstate__(state)
    assert isinstance(models.codec, SlotCodec)


def test_an_entry_written_ahead_is_dropped_when_its_key_changes_again():
    spec = ModelSpec.from_settings(ModelSettings(scope="key"))
    models = KeyedModels(spec, max_resident=2)
    for key in "abc":  # "c" is the third key of two resident: a fleet taking turns
        models.get(key).n_learned += 1
    models.get("b")  # "c" was just used: its entry is written now, while it is hot
    assert "c" in models._encoded
    models.get("c").n_learned += 5  # "c" comes back before it was parked
    assert "c" not in models._encoded
    payloads, _ = models.changes()
    assert models.decode(payloads["c"]).n_learned == 6
    models.get("d").n_learned += 2  # parks "b"; "d" is written ahead at the next get
    models.get("e")  # parks "c" (written now) and keeps "d"'s entry for its park
    assert "d" in models._encoded
    models.get("a")  # parks "d" from the entry written ahead
    parked = {key: models.decode(entry).n_learned for key, entry in models.parked.items()}
    assert parked == {"b": 1, "c": 6, "d": 2}


def test_a_resident_key_quiet_for_a_checkpoint_interval_is_written_ahead_and_a_busy_one_is_not():
    spec = ModelSpec.from_settings(ModelSettings(scope="key"))
    models = KeyedModels(spec, max_resident=100)  # every key stays in memory
    for key in "ab":
        models.get(key).n_learned += 1
    models.changes()
    models.committed()  # interval 1 changed "a" and "b"
    models.get("a").n_learned += 1
    models.get("b")  # "a" changed in interval 1: busy, not written ahead
    assert "a" not in models._encoded
    models.changes()
    models.committed()  # interval 2 changed "a" and "b"; "c" was never seen
    models.changes()
    models.committed()  # interval 3 changed nothing: "a" and "b" are quiet now
    models.get("a").n_learned += 1
    models.get("b").n_learned += 1  # writes "a" ahead, from the state its event left
    assert "a" in models._encoded
    assert models.decode(models._encoded["a"]).n_learned == 3
    models.get("a").n_learned += 1  # "a" came back: what was written ahead is dropped
    assert "a" not in models._encoded
    payloads, _ = models.changes()
    assert {k: models.decode(v).n_learned for k, v in payloads.items()} == {"a": 4, "b": 2}


class StoreSpill:
    """A checkpoint store's two kinds of entries, as the real stores keep them: those of
    the last committed checkpoint, and those parked since."""

    def __init__(self) -> None:
        self.checkpointed: dict[str, bytes] = {}
        self.parked: dict[str, bytes] = {}

    def park(self, key: str, payload: bytes) -> None:
        self.parked[key] = payload

    def load(self, key: str, parked: bool) -> bytes | None:
        return self.parked[key] if parked else self.checkpointed.get(key)

    def parked_bytes(self, n_parked: int) -> int:
        return sum(map(len, self.parked.values()))

    def prefetch(self, keys: Any, parked: Any) -> None:
        pass

    def commit(self, payloads: dict[str, bytes], parked: list[str]) -> None:
        self.checkpointed.update(payloads)
        self.checkpointed.update((key, self.parked.pop(key)) for key in parked)


def test_without_a_checkpoint_store_keys_that_fit_in_memory_are_never_written_ahead():
    spec = ModelSpec.from_settings(ModelSettings(scope="key"))
    models = KeyedModels(spec, max_resident=100)  # no store attached: nothing checkpoints
    for key in ["a", "b", "a", "c", "b"]:
        models.get(key).n_learned += 1
    assert models._encoded == {}
    attached = KeyedModels(spec, max_resident=100)
    attached.attach(StoreSpill())
    for key in "ab":
        attached.get(key).n_learned += 1
    assert list(attached._encoded) == ["a"]  # "b" is written at the next get, or checkpoint


OP = st.one_of(st.tuples(st.just("event"), st.integers(0, 5), st.integers(1, 3)),
               st.tuples(st.just("checkpoint"), st.just(0), st.booleans()))


@given(ops=st.lists(OP, min_size=1, max_size=80), max_resident=st.sampled_from([2, 4, 100]))
@settings(max_examples=60, deadline=None)
def test_every_checkpoint_holds_the_state_of_every_changed_key_whatever_was_written_ahead(
        ops: list[tuple[str, int, Any]], max_resident: int) -> None:
    """Keys written ahead (loaded, created or quiet) still checkpoint their latest state,
    whether or not the previous checkpoint was committed."""
    spec = ModelSpec.from_settings(ModelSettings(scope="key"))
    models = KeyedModels(spec, max_resident)
    spill = StoreSpill()
    models.attach(spill)
    truth: dict[str, int] = {}
    for op, key_index, arg in ops:  # arg: the event's change, or whether the store took it
        if op == "event":
            key = f"k{key_index}"
            models.get(key).n_learned += arg
            truth[key] = truth.get(key, 0) + arg
            continue
        payloads, parked = models.changes()
        changed = {k: models.decode(v).n_learned for k, v in payloads.items()}
        changed.update({k: models.decode(spill.parked[k]).n_learned for k in parked})
        assert changed == {k: truth[k] for k in changed}
        if arg:
            spill.commit(payloads, parked)
            models.committed()
    spill.commit(*models.changes())
    assert {k: models.decode(v).n_learned for k, v in spill.checkpointed.items()} == truth


# -- any stream: parking every model changes nothing ----------------------------------------

EVENT = st.tuples(
    st.integers(0, 5),  # the key
    st.floats(-3, 3, allow_nan=False, allow_infinity=False),
    st.booleans(),  # has feature "b" (the schema monitor sees it come and go)
    st.booleans(),  # carries its label (keys without labels have no error monitor)
)


@given(events=st.lists(EVENT, min_size=1, max_size=120), max_resident=st.integers(1, 3),
       task=st.sampled_from(["regression", "classification"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_on_any_stream_parked_slots_give_the_outputs_of_resident_ones(
        events: list[tuple[int, float, bool, bool]], max_resident: int, task: str) -> None:
    records = []
    for i, (key, a, with_b, labelled) in enumerate(events):
        features = {"a": a, **({"b": a * a} if with_b else {})}
        record: dict[str, Any] = {"id": i, "key": f"k{key}", "ts": float(i), "features": features}
        if labelled:
            record["label"] = int(a > 0) if task == "classification" else 2.0 * a + 1.0
        records.append(record)
    pipeline = CLASSIFIER if task == "classification" else REGRESSOR
    _, resident = keyed_run(pipeline, task, records, max_resident=100, action="reset")
    learner, parked = keyed_run(pipeline, task, records, max_resident=max_resident,
                                action="reset")
    assert parked == resident
    assert learner.models.codec.n_pickled == 0


# -- compiled objects (River's Rust detectors and vectors) ---------------------------------------


class Native:
    """Stands for a compiled type: no ``__dict__``, pickled through its new-args and state."""

    __slots__ = ("size", "values")

    def __new__(cls, size: int, values: tuple[float, ...] = ()) -> Any:  # built by __new__
        obj = super().__new__(cls)
        obj.size, obj.values = size, values
        return obj

    def __getnewargs__(self) -> tuple[int]:
        return (self.size,)

    def __getstate__(self) -> tuple[float, ...]:
        return self.values

    def __setstate__(self, state: tuple[float, ...]) -> None:
        self.values = state


class Forgetful(Native):
    """Its state is not taken back: rebuilding it from its parts would lose the values."""

    __slots__ = ()

    def __setstate__(self, state: tuple[float, ...]) -> None:
        self.values = ()

    def __reduce_ex__(self, protocol: Any) -> Any:  # pickles its values, unlike its parts
        return (Forgetful, (self.size, self.values))


class Built:
    """Rebuilt by a factory rather than by its class: left to pickle."""

    __slots__ = ("x",)

    def __init__(self, x: float) -> None:
        self.x = x

    def __reduce__(self) -> Any:
        return (_build, (self.x,))


def _build(x: float) -> Built:
    return Built(x)


def test_the_shipped_models_compiled_objects_travel_as_their_parts_not_as_pickles():
    learner, _ = keyed_run(REGRESSOR, "regression", stream("regression", 300, keys=2),
                           max_resident=100)
    slot = next(iter(learner.models.resident()))
    nodes = describe(slot)
    assert nodes is not None
    boxes = {box.split(":")[-1] for node in nodes for box in node.boxes if box}
    assert {"AdaptiveWindowing", "VectorDict"} <= boxes  # River's Rust-backed objects
    codec = SlotCodec()
    decoded = codec.decode(codec.encode(slot))
    assert state_of(decoded) == state_of(pickle.loads(pickle.dumps(slot)))
    # new objects, not the encoded slot's: learning one key never moves another
    assert decoded.model["LinearRegression"]._weights is not slot.model["LinearRegression"]._weights


def test_a_compiled_object_is_boxed_only_when_its_parts_give_back_what_pickle_gives():
    codec = SlotCodec()
    slot = Slot(Shape(n=Native(3, (1.0, 2.0)), f=Forgetful(2, (5.0,)), b=Built(4.0)))
    (node,) = [n for n in describe(slot) or () if n.qualname == "Shape"]
    boxes = dict(zip(node.data, node.boxes, strict=True))
    assert boxes == {"n": f"newobj:{Native.__module__}:Native", "f": "", "b": ""}
    entry = codec.encode(slot)
    assert entry[:1] == FLAT
    decoded = codec.decode(entry)
    assert state_of(decoded) == state_of(slot)
    assert (decoded.model.n.values, decoded.model.f.values, decoded.model.b.x) == ((1.0, 2.0),
                                                                                    (5.0,), 4.0)
    # a value of another type in the boxed attribute: the slot no longer fits the layout
    other = Slot(Shape(n=None, f=Forgetful(2), b=Built(1.0)))
    assert state_of(codec.decode(codec.encode(other))) == state_of(other)
    assert len(codec.layouts) == 2


def _objects(slot: Any, nodes: Any) -> list[Any]:
    """The objects of ``slot`` that the layout ``nodes`` lists, in its order."""
    found: list[Any] = []
    for node in nodes:
        if node.parent < 0:
            found.append(slot)
            continue
        parent, kind = found[node.parent], nodes[node.parent].kind
        found.append(parent[node.name] if kind == "map" else getattr(parent, node.name))
    return found


def test_a_slot_with_an_attribute_more_less_or_renamed_in_any_object_fits_no_layout():
    learner, _ = keyed_run(REGRESSOR, "regression", stream("regression", 300, keys=2),
                           max_resident=100)
    slot = next(iter(learner.models.resident()))
    codec = SlotCodec()
    codec.encode(slot)
    (layout,) = codec.layouts.values()
    nodes = layout.nodes
    dict_nodes = [i for i, n in enumerate(nodes) if n.kind == "dict"]
    assert len(dict_nodes) > 10
    for i in dict_nodes:
        for change in ("more", "less", "renamed"):
            copy = pickle.loads(pickle.dumps(slot))
            attrs = vars(_objects(copy, nodes)[i])
            if change != "more" and not attrs:
                continue
            if change != "more":
                del attrs[sorted(attrs)[0]]  # read by extract or not, whichever comes first
            if change != "less":
                attrs["unheard_of"] = 0
            assert layout.read(copy) is None, (nodes[i].qualname, change)
            assert not layout.fits(copy), (nodes[i].qualname, change)
            # an attribute nobody reads: the slot is still encoded exactly, in a layout of its own
            decoded = codec.decode(codec.encode(copy))
            assert state_of(decoded) == state_of(pickle.loads(pickle.dumps(copy)))


class Cache(set):  # type: ignore[type-arg]
    """Pickles as a new, empty cache whatever it holds, unless told to keep its items."""

    keep = False

    def __reduce__(self) -> Any:
        return (Cache, (list(self),)) if self.keep else (Cache, ())


def test_a_value_that_pickles_as_an_empty_object_is_not_written_but_made_again():
    codec = SlotCodec()
    full = Cache({1, 2, 3})
    slot = Slot(Shape(c=full, x=2.0))
    (node,) = [n for n in describe(slot) or () if n.qualname == "Shape"]
    assert dict(zip(node.data, node.boxes, strict=True))["c"] == f"empty:{__name__}:Cache"
    entry = codec.encode(slot)
    assert entry[:1] == FLAT and len(entry) < len(codec.encode(Slot(Shape(c=[1, 2, 3], x=2.0))))
    decoded = codec.decode(entry)
    assert type(decoded.model.c) is Cache and not decoded.model.c and decoded.model.x == 2.0
    assert state_of(decoded) == state_of(pickle.loads(pickle.dumps(slot)))
    # one that would pickle its items: no longer fits, and is written with them
    kept = Cache({4, 5})
    kept.keep = True
    other = Slot(Shape(c=kept, x=1.0))
    assert codec.decode(codec.encode(other)).model.c == {4, 5}
    assert len(codec.layouts) == 2


def test_the_shipped_schema_monitors_caches_are_not_written():
    learner, _ = keyed_run(REGRESSOR, "regression", stream("regression", 300, keys=2),
                           max_resident=100)
    slot = next(iter(learner.models.resident()))
    boxes = [box for node in describe(slot) or () for box in node.boxes if box]
    assert boxes.count("empty:stream_learner.drift.monitors:Memo") == 2
    schema = slot.drift.schema
    assert isinstance(schema, SchemaMonitor) and schema.seen and schema.known
    codec = SlotCodec()
    decoded = codec.decode(codec.encode(slot))
    assert not decoded.drift.schema.seen and not decoded.drift.schema.known
    assert state_of(decoded) == state_of(pickle.loads(pickle.dumps(slot)))


class Evolving:
    """Unpickles renamed when told to: a class whose shape changed since a layout was learned."""

    renamed = False

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if Evolving.renamed:
            self.__dict__["y"] = self.__dict__.pop("x")


def test_an_entry_whose_template_or_values_no_longer_fit_is_refused(monkeypatch):
    codec = SlotCodec()
    entry = codec.encode(Slot(Evolving(x=1.0), n_learned=3))
    (ident,) = codec.layouts
    head = pickle.dumps(codec)
    assert pickle.loads(head).decode(entry).model.x == 1.0
    # too few values for the layout
    with pytest.raises(CheckpointError, match="does not fit its slot layout"):
        pickle.loads(head).decode(FLAT + ident + pickle.dumps((3,)))
    # the class now gives another shape: its template no longer has the layout
    monkeypatch.setattr(Evolving, "renamed", True)
    with pytest.raises(CheckpointError, match="no longer fits its own template"):
        pickle.loads(head).decode(entry)


def test_a_shell_kept_from_a_parked_slot_is_overwritten_whole():
    learner, _ = keyed_run(REGRESSOR, "regression", stream("regression", 300, keys=3),
                           max_resident=100)
    first, second, third = learner.models.resident()
    codec = SlotCodec()
    entries = [codec.encode(slot) for slot in (first, second)]
    codec.recycle(pickle.loads(pickle.dumps(third)))  # a slot that left memory
    (pool,) = codec._pools.values()
    assert len(pool) == 1
    shell = pool[0]
    decoded = [codec.decode(entry) for entry in entries]
    assert decoded[0] is shell and decoded[1] is not shell and not pool  # then the template
    for slot, copy in zip((first, second), decoded, strict=True):
        assert state_of(copy) == state_of(pickle.loads(pickle.dumps(slot)))
