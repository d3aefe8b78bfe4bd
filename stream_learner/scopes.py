"""Which model scores an event: one per partition, or one per key.

Both scopes answer :meth:`get` with the :class:`Slot` (model and learn count)
of a key. :class:`PartitionModels` has one slot for every key.
:class:`KeyedModels` copies a key's model from a prototype on the key's first
event and keeps at most ``max_resident`` models in memory; the least recently
used ones are *parked*: encoded into a :class:`Spill` (memory without a
checkpoint store, the store with one), so nothing they learned is lost, and
decoded when their key returns. The encoding (:mod:`stream_learner.slot_codec`:
a flat tuple of the slot's values, or a pickle of the whole slot) restores
what pickling would, so a parked model predicts as if it had never left.

Both are plain picklable objects (no locks, no handles, no lambdas): a shard's
state is checkpointed by pickling its learner.

Examples
--------
>>> from stream_learner.models import ModelSpec, warm_plans
>>> from stream_learner.settings import ModelSettings
>>> models = make_models(ModelSpec.from_settings(ModelSettings(scope="key", max_resident=2)))
>>> for key in ["a", "b", "c", "a"]:
...     models.get(key).n_learned += 1
>>> models.n_resident, models.n_parked, sorted(models.parked)
(2, 1, ['b'])
>>> models.get("b").n_learned, sorted(models.parked)
(1, ['c'])
"""

from __future__ import annotations

import itertools
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from stream_learner.models import ModelSpec, warm_plans
from stream_learner.slot_codec import SlotCodec

if TYPE_CHECKING:
    from stream_learner.drift.watch import SlotDrift

__all__ = [
    "KeyedModels",
    "MemorySpill",
    "ModelScope",
    "PartitionModels",
    "Slot",
    "Spill",
    "make_models",
    "memory_bytes",
]


@dataclass(slots=True)
class Slot:
    """A model, the number of ``learn_one`` calls it has had, and its drift state.

    ``generation`` counts how many times a drift action replaced the model
    (:meth:`replace`); ``drift`` holds the model's monitors (see
    :mod:`stream_learner.drift.watch`), so that per-key monitors are parked with
    their model.
    """

    model: Any
    n_learned: int = 0
    generation: int = 0
    drift: SlotDrift | None = None

    def replace(self, model: Any, n_learned: int) -> None:
        """Serve ``model`` from now on (it has had ``n_learned`` ``learn_one`` calls).

        Examples
        --------
        >>> slot = Slot("old", 5)
        >>> slot.replace("new", 2)
        >>> slot.model, slot.n_learned, slot.generation
        ('new', 2, 1)
        """
        self.model = model
        self.n_learned = n_learned
        self.generation += 1


class ModelScope(Protocol):
    """Finds the model of a key."""

    def get(self, key: str) -> Slot:
        """The slot that scores and learns ``key``'s events."""
        ...

    @property
    def n_resident(self) -> int:
        """Models in memory."""
        ...

    @property
    def n_parked(self) -> int:
        """Models moved out of memory (encoded)."""
        ...

    @property
    def parked_bytes(self) -> int:
        """Size of the parked models' entries."""
        ...

    def resident(self) -> Iterator[Slot]:
        """The slots in memory."""
        ...


class PartitionModels:
    """One model for every key of the partition."""

    def __init__(self, spec: ModelSpec) -> None:
        self.slot = Slot(spec.build())

    def get(self, key: str) -> Slot:
        """The partition's one slot, whatever the key."""
        return self.slot

    @property
    def n_resident(self) -> int:
        """Always 1."""
        return 1

    @property
    def n_parked(self) -> int:
        """Always 0."""
        return 0

    @property
    def parked_bytes(self) -> int:
        """Always 0."""
        return 0

    def resident(self) -> Iterator[Slot]:
        """The one slot."""
        yield self.slot


class Spill(Protocol):
    """Where a keyed scope's models go when they leave memory.

    ``load(key, parked=True)`` asks for a model parked since the last
    checkpoint; ``parked=False`` for the one of the last checkpoint.
    """

    def park(self, key: str, payload: bytes) -> None:
        """Keep ``payload`` (an encoded :class:`Slot`) of ``key``."""
        ...

    def load(self, key: str, parked: bool) -> bytes | None:
        """The encoded slot of ``key``, if it has one."""
        ...

    def parked_bytes(self, n_parked: int) -> int:
        """Size of the parked entries (an estimate when they live in a store)."""
        ...

    def prefetch(self, keys: Sequence[str], parked: Sequence[str]) -> None:
        """A hint: ``keys`` (checkpointed) and ``parked`` will be loaded soon."""
        ...


class MemorySpill:
    """Parked models as entries in memory (no checkpoint store: they go nowhere else)."""

    def __init__(self) -> None:
        self.parked: dict[str, bytes] = {}
        self._bytes = 0

    def park(self, key: str, payload: bytes) -> None:
        """See :meth:`Spill.park`."""
        self.parked[key] = payload
        self._bytes += len(payload)

    def load(self, key: str, parked: bool) -> bytes | None:
        """See :meth:`Spill.load` (every entry here is one parked in this process)."""
        payload = self.parked.pop(key, None)
        if payload is not None:
            self._bytes -= len(payload)
        return payload

    def parked_bytes(self, n_parked: int) -> int:
        """Exact: the sum of the entries."""
        return self._bytes

    def prefetch(self, keys: Sequence[str], parked: Sequence[str]) -> None:
        """Nothing to read ahead: the entries are here."""


class KeyedModels:
    """One model per key, created lazily, at most ``max_resident`` of them in memory.

    A new key's model is a copy of a prototype (unpickling it is about five
    times cheaper than building the pipeline from the settings). Beyond
    ``max_resident``, the least recently used model is parked in the
    :class:`Spill`: entries in memory by default, the checkpoint store when
    checkpoints are on (:meth:`attach`), so memory is bounded by ``max_resident``
    whatever the number of keys. A slot that leaves memory is kept as a shell
    for the next load (:meth:`SlotCodec.recycle <stream_learner.slot_codec.SlotCodec.recycle>`).
    The entry of a key likely to change once before the next checkpoint or park
    (loaded, created, or quiet for a whole checkpoint interval: a large fleet
    taking turns) is written at the next :meth:`get`, while its objects are hot;
    without a checkpoint store, only once there are more keys than ``max_resident``.

    For incremental checkpoints the scope remembers which resident models
    changed (every :meth:`get` may change one) and which were parked since the
    last checkpoint; :meth:`changes` and :meth:`committed` hand them over.
    Pickling the scope inside :meth:`head_view` leaves the models out.

    Parameters
    ----------
    spec
        Builds a fresh model for a new key.
    max_resident
        Most models in memory; the least recently used beyond it are parked.
    """

    def __init__(self, spec: ModelSpec, max_resident: int) -> None:
        self.spec = spec
        self.max_resident = max_resident
        self._resident: OrderedDict[str, Slot] = OrderedDict()
        self.spill: Spill | None = MemorySpill()
        #: keys ever created in the shard (kept in checkpoints)
        self.n_keys = 0
        self._dirty: set[str] = set()
        #: keys changed in the checkpoint interval before the current one
        self._changed_before: set[str] = set()
        self._parked_dirty: set[str] = set()
        self._prototype = pickle.dumps(Slot(warm_plans(spec.build())),
                                       protocol=pickle.HIGHEST_PROTOCOL)
        #: writes and reads the parked and checkpointed slots (flat tuples, see its module)
        self.codec = SlotCodec()
        #: entries written ahead (:meth:`_encode_fresh`) of dirty keys, and the key to write
        self._encoded: dict[str, bytes] = {}
        self._fresh: str | None = None
        self._head_only = False
        self.n_created = 0
        self.n_evicted = 0

    def get(self, key: str) -> Slot:
        """The key's slot: resident, loaded from where it was parked, or new."""
        if self._fresh is not None:
            self._encode_fresh()
        slot = self._resident.get(key)
        if slot is None:
            slot = self._load(key) or self._create()
            self._resident[key] = slot
            if len(self._resident) > self.max_resident:
                self._park(next(iter(self._resident)))
            if self.n_keys > self.max_resident or not isinstance(self.spill, MemorySpill):
                self._fresh = key  # to be parked, or checkpointed, before it changes again
        else:
            self._resident.move_to_end(key)
            if self._encoded:
                self._encoded.pop(key, None)
            if key not in self._dirty and key not in self._changed_before:
                self._fresh = key  # a key quiet for a whole checkpoint interval
        self._dirty.add(key)
        return slot

    def _encode_fresh(self) -> None:
        """Write the entry of the key of the previous :meth:`get`, while it is hot.

        That key was loaded, created, or quiet (unchanged in the previous
        checkpoint interval and in this one until that get). In a fleet beyond
        ``max_resident`` a loaded key is usually parked before it returns, and a
        quiet key rarely comes back before the next checkpoint, so its entry is
        needed once: written now, from objects the previous event just used, it
        costs about half what it costs from cold memory at the checkpoint or the
        park. Any later :meth:`get` of the key drops it (and a key that changed in
        the previous interval is not written ahead: it would likely change again).
        """
        key, self._fresh = self._fresh, None
        if key is not None and (slot := self._resident.get(key)) is not None:
            self._encoded[key] = self.codec.encode(slot)

    def _create(self) -> Slot:
        self.n_created += 1
        self.n_keys += 1
        slot: Slot = pickle.loads(self._prototype)
        return slot

    def _load(self, key: str) -> Slot | None:
        if self.spill is None:
            raise RuntimeError("a keyed checkpoint head must be attached to its store first")
        parked = key in self._parked_dirty
        payload = self.spill.load(key, parked)
        if payload is None:
            return None
        self._parked_dirty.discard(key)
        return self.decode(payload)

    def _park(self, key: str) -> None:
        slot = self._resident.pop(key)
        self.n_evicted += 1
        if key in self._dirty:  # else unchanged since the last checkpoint, which holds it
            self._dirty.discard(key)
            assert self.spill is not None
            payload = self._encoded.pop(key, None) or self.codec.encode(slot)
            self.spill.park(key, payload)
            self._parked_dirty.add(key)
        self.codec.recycle(slot)

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the models of ``keys`` that are not in memory ahead, in one request.

        A hint (the service passes the Kafka record keys of a poll batch): a wrong
        key costs a lookup, nothing else.
        """
        if self.spill is None:
            return
        resident, parked_dirty = self._resident, self._parked_dirty
        missing = [key for key in set(keys) if key not in resident]
        if missing:
            self.spill.prefetch(
                [k for k in missing if k not in parked_dirty],
                [k for k in missing if k in parked_dirty],
            )

    # -- incremental checkpoints ---------------------------------------------------------

    def attach(self, spill: Spill) -> None:
        """Park in ``spill`` from now on; what was parked elsewhere moves there."""
        old, self.spill = self.spill, spill
        if isinstance(old, MemorySpill):
            for key, payload in list(old.parked.items()):
                spill.park(key, payload)
                self._parked_dirty.add(key)
            old.parked.clear()
        self._dirty.update(self._resident)

    def changes(self) -> tuple[dict[str, bytes], list[str]]:
        """Entries of the resident models changed since the last checkpoint, and the keys
        parked since then (their entries are where they were parked)."""
        if self._fresh is not None:
            self._encode_fresh()
        encode, resident, encoded = self.codec.encode, self._resident, self._encoded
        payloads = {key: encoded.get(key) or encode(resident[key]) for key in self._dirty}
        return payloads, sorted(self._parked_dirty)

    def committed(self) -> None:
        """The changes returned by :meth:`changes` are checkpointed."""
        self._changed_before, self._dirty = self._dirty, set()
        self._parked_dirty.clear()
        self._encoded.clear()

    @property
    def has_parked_changes(self) -> bool:
        """True when models were parked since the last checkpoint."""
        return bool(self._parked_dirty)

    @contextmanager
    def head_view(self) -> Iterator[None]:
        """Pickle without the models (they are checkpointed as entries)."""
        self._head_only = True
        try:
            yield
        finally:
            self._head_only = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_head_only=False, _encoded={}, _fresh=None, _changed_before=set())
        if not isinstance(self.spill, MemorySpill):  # a store handle is attached again
            state["spill"] = None
        if self._head_only:
            state.update(_resident=OrderedDict(), spill=None, _dirty=set(), _parked_dirty=set())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("codec", SlotCodec())  # a head written before slots were flat
        state.setdefault("_encoded", {})
        state.setdefault("_fresh", None)
        state.setdefault("_changed_before", set())
        self.__dict__.update(state)

    def decode(self, entry: bytes) -> Slot:
        """The slot of a parked or checkpointed entry (a reader outside the scope)."""
        slot: Slot = self.codec.decode(entry)
        return slot

    @property
    def n_resident(self) -> int:
        """Models in memory."""
        return len(self._resident)

    @property
    def n_parked(self) -> int:
        """Models out of memory (parked, or not loaded since a restore)."""
        return self.n_keys - len(self._resident)

    @property
    def parked_bytes(self) -> int:
        """Size of the parked entries (estimated when they live in the store)."""
        return 0 if self.spill is None else self.spill.parked_bytes(self.n_parked)

    @property
    def parked(self) -> dict[str, bytes]:
        """The entries parked in memory (empty when they live in the store)."""
        return self.spill.parked if isinstance(self.spill, MemorySpill) else {}

    def resident(self) -> Iterator[Slot]:
        """The slots in memory, least recently used first."""
        yield from self._resident.values()


def make_models(spec: ModelSpec) -> ModelScope:
    """The scope ``model.scope`` asks for (forecasting is always per key)."""
    if spec.scope == "key":
        return KeyedModels(spec, spec.settings.max_resident)
    return PartitionModels(spec)


#: resident models measured by :func:`memory_bytes` (walking 10,000 models took seconds)
_MEMORY_SAMPLE = 32


def memory_bytes(models: ModelScope) -> int:
    """Estimate of the resident models' memory (River's ``_raw_memory_usage``).

    Measures the :data:`_MEMORY_SAMPLE` least recently used resident models
    and scales to all of them: per-key models share one configuration.

    Examples
    --------
    >>> from stream_learner.settings import ModelSettings
    >>> memory_bytes(make_models(ModelSpec.from_settings(ModelSettings()))) > 0
    True
    """
    slots = list(itertools.islice(models.resident(), _MEMORY_SAMPLE))
    if not slots:
        return 0
    sampled = sum(int(slot.model._raw_memory_usage) for slot in slots)
    return sampled * models.n_resident // len(slots)
