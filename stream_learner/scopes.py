"""Which model scores an event: one per partition, or one per key.

Both scopes answer :meth:`get` with the :class:`Slot` (model and learn count)
of a key. :class:`PartitionModels` has one slot for every key.
:class:`KeyedModels` builds a key's model from the configured template on the
key's first event and keeps at most ``max_resident`` models in memory; the
least recently used ones are *parked*: pickled to bytes kept inside the shard's
state, so nothing they learned is lost, and unpickled when their key returns.
Pickling is exact, so a parked model predicts as if it had never left.

Both are plain picklable objects (no locks, no handles, no lambdas): a shard's
state is checkpointed by pickling its learner.

Examples
--------
>>> from stream_learner.models import ModelSpec
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

import pickle
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from stream_learner.models import ModelSpec

__all__ = ["KeyedModels", "ModelScope", "PartitionModels", "Slot", "make_models", "memory_bytes"]


@dataclass(slots=True)
class Slot:
    """A model, the number of ``learn_one`` calls it has had, and its drift state.

    ``generation`` counts how many times a drift action replaced the model;
    ``drift`` holds the model's monitors (see :mod:`stream_learner.drift_watch`),
    so that per-key monitors are parked with their model.
    """

    model: Any
    n_learned: int = 0
    generation: int = 0
    drift: Any = None


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
        """Models moved out of memory (pickled)."""
        ...

    @property
    def parked_bytes(self) -> int:
        """Size of the parked models' pickles."""
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


class KeyedModels:
    """One model per key, created lazily, at most ``max_resident`` of them in memory.

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
        #: key -> pickled slot, for models moved out of memory
        self.parked: dict[str, bytes] = {}
        self._parked_bytes = 0
        self.n_created = 0
        self.n_evicted = 0
        self.n_restored = 0

    def get(self, key: str) -> Slot:
        """The key's slot: resident, restored from its pickle, or new."""
        slot = self._resident.get(key)
        if slot is not None:
            self._resident.move_to_end(key)
            return slot
        slot = self._restore(key) if key in self.parked else self._create()
        self._resident[key] = slot
        if len(self._resident) > self.max_resident:
            self._park(next(iter(self._resident)))
        return slot

    def _create(self) -> Slot:
        self.n_created += 1
        return Slot(self.spec.build())

    def _restore(self, key: str) -> Slot:
        blob = self.parked.pop(key)
        self._parked_bytes -= len(blob)
        self.n_restored += 1
        slot: Slot = pickle.loads(blob)
        return slot

    def _park(self, key: str) -> None:
        blob = pickle.dumps(self._resident.pop(key), protocol=pickle.HIGHEST_PROTOCOL)
        self.parked[key] = blob
        self._parked_bytes += len(blob)
        self.n_evicted += 1

    @property
    def n_resident(self) -> int:
        """Models in memory."""
        return len(self._resident)

    @property
    def n_parked(self) -> int:
        """Models pickled into the state."""
        return len(self.parked)

    @property
    def parked_bytes(self) -> int:
        """Total size of the parked pickles."""
        return self._parked_bytes

    def resident(self) -> Iterator[Slot]:
        """The slots in memory, least recently used first."""
        yield from self._resident.values()


def make_models(spec: ModelSpec) -> ModelScope:
    """The scope ``model.scope`` asks for (forecasting is always per key)."""
    if spec.scope == "key":
        return KeyedModels(spec, spec.settings.max_resident)
    return PartitionModels(spec)


def memory_bytes(models: ModelScope) -> int:
    """Estimate of the resident models' memory (River's ``_raw_memory_usage``); costly.

    Examples
    --------
    >>> from stream_learner.settings import ModelSettings
    >>> memory_bytes(make_models(ModelSpec.from_settings(ModelSettings()))) > 0
    True
    """
    return sum(int(slot.model._raw_memory_usage) for slot in models.resident())
