"""Per-key model slots as flat tuples: cheaper to checkpoint and park than pickled graphs.

A fleet beyond ``model.max_resident`` saves and loads a model slot (the model,
its counts and its drift monitors) for about every event, and pickling the
slot's object graph costs more than the event itself: pickle writes every
object's class and attribute names each time, and rebuilds every object on
load. Per-key slots share one shape (the same pipeline, the same monitors),
so a :class:`SlotCodec` learns the shape once, as a :class:`Layout`, and from
then on writes only the values that differ between keys:

- the *layout* lists the slot's objects (the *nodes*: plain Python objects,
  and dicts of them such as a pipeline's steps), and for each node the
  attributes that hold *data* (numbers, strings, containers, and objects that
  pickle themselves, such as River's Rust-backed vectors and detectors);
  attributes that point at other nodes (a pipeline's cached plan) are
  *structure*, the same in every slot of the layout;
- an *entry* is ``FLAT`` + the layout's 16-byte id + the pickle of the data
  values in layout order (one flat tuple: few objects, no class names); a
  ``Counter`` or ``defaultdict`` goes as a plain dict, and a compiled object
  (River's Rust-backed detectors and vectors) as the parts pickle would take
  from it, its constructor's arguments and its state, got by calling them
  directly (pickle's ``__reduce_ex__`` path costs several times more), when
  the object rebuilt from them pickles to the same bytes; and a value that
  pickles as a new, empty object of its class (a cache) not at all;
- loading an entry writes those values into a *shell*: a slot of the same
  layout, either one that just left memory (the codec keeps a few, see
  :meth:`SlotCodec.recycle`) or a copy of the layout's *template* (the slot
  the layout was learned from, pickled whole once).

The result is the slot pickling would give: every data value goes through
pickle, a node with its own ``__setstate__`` gets its state through it, and a
slot that does not fit any layout (and no new one can be learned) is pickled
whole, as before (entries start with pickle's ``0x80``; both kinds load).
What a layout cannot see: a data value that comes to hold one of the slot's
nodes after the layout was learned would be written as a copy of it. The
slots of this service never do (a challenger holds its own model, a reset's
recent labels plain values), and the tests compare decoded slots with
unpickled ones.

Layouts are kept with the codec, which is part of the shard's checkpoint head
(descriptions and templates; the code is generated again on load), so any process of the
same build reads the entries. Checkpoints of another build are refused before
anything is read (see :mod:`stream_learner.checkpoint`).

Examples
--------
>>> from stream_learner.models import ModelSpec
>>> from stream_learner.scopes import Slot
>>> from stream_learner.settings import ModelSettings
>>> spec = ModelSpec.from_settings(ModelSettings())
>>> slot = Slot(spec.build(), n_learned=1)
>>> slot.model.learn_one({"x": 1.0}, 2.0)
>>> codec = SlotCodec()
>>> entry = codec.encode(slot)
>>> entry[:1] == FLAT, len(codec.layouts)
(True, 1)
>>> copy = codec.decode(entry)
>>> copy.n_learned, copy.model.predict_one({"x": 1.0}) == slot.model.predict_one({"x": 1.0})
(1, True)
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from stream_learner.errors import CheckpointError

__all__ = ["FLAT", "MAX_LAYOUTS", "MAX_NODES", "POOL_SIZE", "Layout", "SlotCodec", "describe"]

#: first byte of a flat entry (a pickle starts with 0x80)
FLAT = b"\x01"

#: layouts one codec learns at most (slots found to have none count too); a slot
#: fitting none of them is pickled whole
MAX_LAYOUTS = 8

#: shells kept per layout for the next loads (slots that left memory)
POOL_SIZE = 64

#: objects a layout lists at most: a bigger graph (a grown tree, a forest) is pickled whole
MAX_NODES = 128

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_ID_BYTES = 16

#: types never walked into: their instances are data, whatever their attributes
_BUILTIN_MODULES = frozenset({"builtins", "collections", "functools", "enum", "types"})
#: nor are classes, or subclasses of the built-in containers and scalars (their items
#: are not attributes)
_OPAQUE = (type, dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex)


class _Misfit(Exception):
    """The slot does not have the layout's shape."""


@dataclass(frozen=True, slots=True)
class _Node:
    """One object of a layout: where it hangs, what it is, which attributes are data."""

    parent: int  # index of the parent node (-1: the root)
    name: str  # attribute of the parent, or key in a parent mapping
    kind: str  # "dict" (has __dict__), "slots" (only __slots__), "map" (a dict of nodes)
    module: str
    qualname: str
    keys: tuple[str, ...]  # every attribute (or key) the object must have
    data: tuple[str, ...]  # the attributes whose values an entry carries
    setstate: bool  # restored through the type's own __setstate__
    boxes: tuple[str, ...]  # per data attribute: "" or the dict subclass written as a dict


def _resolve(module: str, qualname: str) -> type:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise CheckpointError(f"layout names {module}.{qualname}, which is not a class")
    return obj


def _importable(cls: type) -> bool:
    """True when ``cls`` is found again by its module and qualified name (as pickle finds it)."""
    try:
        return _resolve(cls.__module__, cls.__qualname__) is cls
    except (ImportError, AttributeError, CheckpointError):
        return False


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name, None) is not getattr(object, name, None)


def _walkable(value: Any) -> bool:
    """True for an object whose attributes a layout may list (it pickles as its ``__dict__``)."""
    cls = type(value)
    if cls.__module__ in _BUILTIN_MODULES or isinstance(value, _OPAQUE):
        return False
    if any(_overrides(cls, n) for n in ("__reduce__", "__reduce_ex__", "__getstate__",
                                        "__getnewargs__", "__getnewargs_ex__")):
        return False
    slots = _slot_names(cls)
    if hasattr(value, "__dict__"):
        return not slots  # both a __dict__ and slots: pickle's two-part state, left to it
    return bool(slots) and all(hasattr(value, name) for name in slots)


def _slot_names(cls: type) -> tuple[str, ...]:
    """The attribute names of ``cls``'s slots, private ones mangled (as pickle finds them)."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        slots = klass.__dict__.get("__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"
            names.append(name)
    return tuple(names)


def _is_map(value: Any) -> bool:
    return (type(value) in (dict, OrderedDict) and bool(value)
            and all(type(k) is str for k in value) and all(map(_walkable, value.values())))


def _contents(value: Any, depth: int = 0) -> Iterator[Any]:
    """``value`` and what its containers hold, a few levels deep."""
    yield value
    if depth >= 4:
        return
    if isinstance(value, dict):
        items: Any = (*value.keys(), *value.values())
    elif isinstance(value, (list, tuple, set, frozenset, deque)):
        items = value
    else:
        return
    for item in items:
        yield from _contents(item, depth + 1)


def _mutables(value: Any) -> set[int]:
    """Ids of the mutable containers in ``value`` (a few levels deep)."""
    return {id(v) for v in _contents(value) if isinstance(v, (dict, list, set, deque))}


def _refers(value: Any, ids: set[int]) -> bool:
    """True when ``value`` is or holds (a few levels deep) one of the objects ``ids``."""
    return any(id(v) in ids for v in _contents(value))


#: default factories a defaultdict may have to be written as a dict (rebuilt by name)
_FACTORIES = {f.__name__: f for f in (float, int, list, dict, set)}


def _box(value: Any) -> str:
    """How a data value is written when not as itself: a dict subclass as a plain dict
    (pickle's fast path), a compiled object as the parts pickle would take from it."""
    if type(value) is Counter:
        return "Counter"
    factory = value.default_factory if type(value) is defaultdict else None
    name = getattr(factory, "__name__", "")
    if factory is not None and _FACTORIES.get(name) is factory:
        return f"defaultdict:{name}"
    return _empty(value) or _native(value)


def _empty(value: Any) -> str:
    """``"empty:<class>"`` for a value that pickles as a new, empty object of its class
    (its ``__reduce__`` gives ``(cls, ())``: a cache such as the schema monitor's
    :class:`~stream_learner.drift.monitors.Memo`), "" otherwise.

    Such a value is not written at all: it is made again by calling its class,
    which is what unpickling it does. Writing it costs pickle about 2 µs (the
    class goes by name), more than the rest of a small slot's scalars.
    """
    cls = type(value)
    if (cls.__module__ in _BUILTIN_MODULES or not _overrides(cls, "__reduce__")
            or not _importable(cls)):
        return ""
    try:
        if value.__reduce__() != (cls, ()):
            return ""
        same = pickle.dumps(cls(), protocol=_PROTOCOL) == pickle.dumps(value, protocol=_PROTOCOL)
    except Exception:  # any failure: left to pickle, which knows the type
        return ""
    return f"empty:{cls.__module__}:{cls.__qualname__}" if same else ""


def _newobj(cls: type, parts: tuple[tuple[Any, ...], Any]) -> Any:
    """The object of ``cls`` whose ``__getnewargs__`` and ``__getstate__`` gave ``parts``."""
    args, state = parts
    obj = cls.__new__(cls, *args)
    obj.__setstate__(state)
    return obj


def _native(value: Any) -> str:
    """``"newobj:<class>"`` or ``"reduce:<class>"`` for a compiled object (no ``__dict__``,
    such as River's Rust-backed detectors and vectors) that can be written as its
    constructor's arguments (and state), "" otherwise.

    Pickle takes the same parts through ``__reduce_ex__``, at several times the cost
    of calling them. The box is used only when the object rebuilt from its parts
    pickles to the same bytes as the object itself.
    """
    cls = type(value)
    if (hasattr(value, "__dict__") or cls.__module__ in _BUILTIN_MODULES
            or isinstance(value, _OPAQUE) or not _importable(cls)):
        return ""
    try:
        if all(_overrides(cls, n) for n in ("__getnewargs__", "__getstate__", "__setstate__")):
            kind = "newobj"
            rebuilt = _newobj(cls, (value.__getnewargs__(), value.__getstate__()))
        elif _overrides(cls, "__reduce__"):
            reduced = value.__reduce__()
            if not (type(reduced) is tuple and len(reduced) == 2 and reduced[0] is cls):
                return ""
            kind, rebuilt = "reduce", cls(*reduced[1])
        else:
            return ""
        same = pickle.dumps(rebuilt, protocol=_PROTOCOL) == pickle.dumps(value, protocol=_PROTOCOL)
    except Exception:  # any failure: left to pickle, which knows the type
        return ""
    return f"{kind}:{cls.__module__}:{cls.__qualname__}" if same else ""


def _counter(items: dict[Any, Any]) -> Counter[Any]:
    counter: Counter[Any] = Counter()
    dict.update(counter, items)
    return counter


def _attrs(obj: Any, as_map: bool = False) -> list[tuple[str, Any]]:
    if as_map:
        return list(obj.items())
    if hasattr(obj, "__dict__"):
        return list(obj.__dict__.items())
    return [(n, getattr(obj, n)) for n in _slot_names(type(obj))]


def describe(root: Any) -> tuple[_Node, ...] | None:
    """The layout of ``root``'s object graph, or None when it has none a codec can use.

    Nodes are listed depth first in attribute order, parents before children.
    An object met a second time, or a value holding a node, is structure (kept
    by the shell). None when a node with its own ``__setstate__`` holds
    structure (its state is given to it whole), when a data value shares a
    mutable container with the structure, or when a class cannot be imported
    by name.

    Examples
    --------
    >>> from stream_learner.scopes import Slot
    >>> [(n.kind, n.qualname, n.data) for n in describe(Slot({"w": 1.0}))]
    [('slots', 'Slot', ('model', 'n_learned', 'generation', 'drift'))]
    """
    if not _walkable(root):
        return None
    found: list[tuple[int, str, Any, bool]] = []  # parent, name, object, is a map
    children: dict[int, set[str]] = {}
    ids = {id(root)}
    stack: list[tuple[int, str, Any, bool]] = [(-1, "", root, False)]
    while stack:
        if len(found) >= MAX_NODES:
            return None
        entry = stack.pop()
        index = len(found)
        found.append(entry)
        _, _, obj, as_map = entry
        mine = children.setdefault(index, set())
        pushed = []
        for name, value in _attrs(obj, as_map):
            if id(value) in ids:
                continue
            if as_map or _walkable(value) or _is_map(value):
                ids.add(id(value))
                mine.add(name)
                pushed.append((index, name, value, not as_map and _is_map(value)))
        stack += reversed(pushed)
    nodes: list[_Node] = []
    data_boxes: set[int] = set()
    structure_boxes: set[int] = set()
    for index, (parent, name, obj, as_map) in enumerate(found):
        cls = type(obj)
        if not _importable(cls):
            return None
        pairs = _attrs(obj, as_map)
        mine = children[index]
        data = () if as_map else tuple(
            k for k, v in pairs if k not in mine and not _refers(v, ids))
        for key, value in pairs:
            if key not in mine:
                (data_boxes if key in data else structure_boxes).update(_mutables(value))
        kind = "map" if as_map else ("dict" if hasattr(obj, "__dict__") else "slots")
        setstate = kind == "dict" and _overrides(cls, "__setstate__")
        if setstate and len(pairs) != len(mine) + len(data):
            return None
        values = dict(pairs)
        nodes.append(_Node(parent, name, kind, cls.__module__, cls.__qualname__,
                           tuple(k for k, _ in pairs), data, setstate,
                           tuple(_box(values[k]) for k in data)))
    if data_boxes & structure_boxes:
        return None
    return tuple(nodes)


class Layout:
    """A compiled layout: reads a slot's data values, writes them into a shell.

    Parameters
    ----------
    nodes
        The description (:func:`describe`).
    template
        A pickled slot of this layout: the shell when none is at hand.
    """

    def __init__(self, nodes: tuple[_Node, ...], template: bytes) -> None:
        self.nodes = nodes
        self.template = template
        self.ident = hashlib.blake2b(repr(nodes).encode(), digest_size=_ID_BYTES).digest()
        types = tuple(_resolve(n.module, n.qualname) for n in nodes)
        self.extract, self.check, self.restore = _compile(nodes, types)

    def read(self, slot: Any) -> tuple[Any, ...] | None:
        """The data values of ``slot``, or None when it does not have this layout."""
        try:
            return self.extract(slot)
        except (_Misfit, AttributeError, KeyError):
            return None

    def fits(self, slot: Any) -> bool:
        """True when ``slot`` has this layout (:meth:`read` without the values)."""
        try:
            self.check(slot)
        except (_Misfit, AttributeError, KeyError):
            return False
        return True

    def shell(self) -> Any:
        """A new slot of this layout (its values are to be overwritten)."""
        return pickle.loads(self.template)


def _compile(nodes: tuple[_Node, ...], types: tuple[type, ...]) -> tuple[
        Callable[[Any], tuple[Any, ...]], Callable[[Any], None], Callable[[Any, Any], None]]:
    """Straight-line functions for one layout (generated: one attribute access per value).

    ``extract(slot)`` walks the nodes, checks each one's type and attribute
    names (raising ``_Misfit``), and returns the data values in layout order;
    ``check(slot)`` only walks and checks; ``restore(shell, values)`` walks the
    shell without checking it (a shell is checked when it is kept, see
    :meth:`SlotCodec.decode`), then writes the values.
    """
    scope: dict[str, Any] = {"M": _Misfit, "Counter": Counter, "defaultdict": defaultdict,
                             "counter": _counter, "newobj": _newobj, **_FACTORIES}
    walk: list[str] = []  # binds and checks every node and boxed value
    reads: list[str] = []  # the same for extract, which reads every data key and child
    binds: list[str] = []  # binds every node, for restore (its shell was checked before)
    values: list[str] = []
    writes: list[str] = []
    for i, node in enumerate(nodes):
        scope[f"T{i}"] = types[i]
        # a map's order is its iteration order (a pipeline's steps): checked as a tuple
        scope[f"K{i}"] = node.keys if node.kind == "map" else frozenset(node.keys)
        reached = _reach(i, node, nodes)
        walk += reached
        reads += _reach(i, node, nodes, _unread(i, node, nodes))
        binds += [line for line in reached if " raise M" not in line]
        taken = []
        for j, (name, box) in enumerate(zip(node.data, node.boxes, strict=True)):
            how, _, ref = box.partition(":")
            if how in ("newobj", "reduce", "empty"):  # a class, by name
                scope[f"B{i}_{j}"] = _resolve(*ref.split(":"))
            read, write, checks = _value(i, j, node.kind, name, box, f"v[{len(values)}]")
            walk += checks
            reads += checks
            if read:
                values.append(read)
            taken.append(write)
        writes += _writes(i, node, taken)
    body = "\n".join(walk)
    source = ("def extract(root):\n" + "\n".join(reads)
              + f"\n    return ({''.join(v + ', ' for v in values)})\n\n"
              f"def check(root):\n{body}\n\n"
              "def restore(root, v):\n" + "\n".join(binds + writes) + "\n")
    exec(compile(source, "<slot layout>", "exec"), scope)  # the code generated above
    return scope["extract"], scope["check"], scope["restore"]


def _unread(i: int, node: _Node, nodes: tuple[_Node, ...]) -> tuple[str, ...]:
    """The attributes of node ``i`` that ``extract`` does not read (neither data nor a child)."""
    read = {*node.data, *(n.name for n in nodes if n.parent == i)}
    return tuple(k for k in node.keys if k not in read)


def _reach(i: int, node: _Node, nodes: tuple[_Node, ...],
           unread: tuple[str, ...] | None = None) -> list[str]:
    """Lines that bind node ``i`` (``n{i}``, and ``d{i}`` its ``__dict__``) and check it.

    With ``unread`` (for code that reads every other attribute, each read raising
    ``KeyError`` when it is missing), a ``__dict__``'s keys are checked by their
    number and the presence of those: the same test as comparing the key sets,
    at about a third of the cost.
    """
    if node.parent < 0:
        lines = [f"    n{i} = root"]
    else:
        parent = nodes[node.parent]
        lines = [f"    n{i} = n{node.parent}[{node.name!r}]" if parent.kind == "map" else
                 f"    n{i} = d{node.parent}[{node.name!r}]" if parent.kind == "dict" else
                 f"    n{i} = n{node.parent}.{node.name}"]
    lines.append(f"    if type(n{i}) is not T{i}: raise M")
    if node.kind == "dict" and unread is not None:
        lines += [f"    d{i} = n{i}.__dict__", f"    if len(d{i}) != {len(node.keys)}: raise M"]
        lines += [f"    if {k!r} not in d{i}: raise M" for k in unread]
    elif node.kind == "dict":
        lines += [f"    d{i} = n{i}.__dict__", f"    if d{i}.keys() != K{i}: raise M"]
    elif node.kind == "map":
        lines.append(f"    if tuple(n{i}) != K{i}: raise M")
    return lines


def _value(i: int, j: int, kind: str, name: str, box: str,
           slot: str) -> tuple[str, str, list[str]]:
    """How data value ``j`` of node ``i`` is read, and written back from ``slot``, and its checks.

    A ``Counter`` or a ``defaultdict`` of a built-in factory travels as a plain
    dict (pickle's fast path) and is rebuilt on the way back; a compiled object
    (``newobj`` and ``reduce`` boxes, see :func:`_native`) as the arguments of its
    constructor (and its state), its class ``B{i}_{j}`` in the generated code's scope;
    a value of an ``empty`` box (see :func:`_empty`) is not carried (its read is
    ""): it is checked, and made again by calling its class.
    """
    read = f"n{i}.{name}" if kind == "slots" else f"d{i}[{name!r}]"
    if not box:
        return read, slot, []
    x, (how, _, arg) = f"x{i}_{j}", box.partition(":")
    if how == "empty":  # not carried: made again (a value whose class reduces it to nothing)
        return "", f"B{i}_{j}()", [f"    {x} = {read}", f"    if type({x}) is not B{i}_{j}"
                                   f" or {x}.__reduce__() != (B{i}_{j}, ()): raise M"]
    if how in ("newobj", "reduce"):
        checks = [f"    {x} = {read}", f"    if type({x}) is not B{i}_{j}: raise M"]
        if how == "newobj":
            return (f"({x}.__getnewargs__(), {x}.__getstate__())", f"newobj(B{i}_{j}, {slot})",
                    checks)
        return f"{x}.__reduce__()[1]", f"B{i}_{j}(*{slot})", checks
    if how == "defaultdict":
        check = (f"    if type({x}) is not defaultdict or {x}.default_factory is not {arg}:"
                 " raise M")
        return f"dict({x})", f"defaultdict({arg}, {slot})", [f"    {x} = {read}", check]
    check = f"    if type({x}) is not Counter: raise M"
    return f"dict({x})", f"counter({slot})", [f"    {x} = {read}", check]


def _writes(i: int, node: _Node, taken: list[str]) -> list[str]:
    """Lines that write node ``i``'s values back (through its ``__setstate__`` if it has one)."""
    pairs = list(zip(node.data, taken, strict=True))
    if node.setstate:
        state = ", ".join(f"{n!r}: {t}" for n, t in pairs)
        return [f"    s = dict(d{i}); s.update({{{state}}}); n{i}.__setstate__(s)"]
    if node.kind == "slots":
        return [f"    n{i}.{n} = {t}" for n, t in pairs]
    return [f"    d{i}[{n!r}] = {t}" for n, t in pairs]


class SlotCodec:
    """Entries of per-key slots: flat tuples in a learned layout, pickles when none fits.

    Part of a keyed scope's checkpoint head: pickling the codec keeps its
    layouts (description and template), and unpickling compiles them again.
    """

    def __init__(self) -> None:
        self.layouts: dict[bytes, Layout] = {}
        self._pools: dict[bytes, list[Any]] = {}
        self._last: Layout | None = None
        #: slots pickled whole because no layout fitted them
        self.n_pickled = 0
        #: slots :func:`describe` found no layout for (they count against MAX_LAYOUTS)
        self._refused = 0

    def encode(self, slot: Any) -> bytes:
        """The entry of ``slot``: flat when a layout fits it (one is learned if needed)."""
        layout, values = self._last, None
        if layout is not None:
            values = layout.read(slot)
        if values is None:
            layout, values = self._fitting(slot)
        if layout is None or values is None:
            self.n_pickled += 1
            return pickle.dumps(slot, protocol=_PROTOCOL)
        return FLAT + layout.ident + pickle.dumps(values, protocol=_PROTOCOL)

    def decode(self, entry: bytes) -> Any:
        """The slot of an entry (flat or pickled).

        Raises
        ------
        CheckpointError
            A flat entry of a layout this codec does not have, or one its
            template no longer fits.
        """
        if entry[:1] != FLAT:
            return pickle.loads(entry)
        ident = entry[1 : 1 + _ID_BYTES]
        layout = self.layouts.get(ident)
        if layout is None:
            raise CheckpointError(f"entry of an unknown slot layout {ident.hex()}")
        pool = self._pools[ident]
        if pool:  # checked by recycle: only the codec has held it since
            shell = pool.pop()
        elif not layout.fits(shell := layout.shell()):
            raise CheckpointError(f"slot layout {ident.hex()} no longer fits its own template")
        try:
            layout.restore(shell, pickle.loads(entry[1 + _ID_BYTES :]))
        except (AttributeError, KeyError, IndexError) as exc:
            raise CheckpointError(f"entry does not fit its slot layout {ident.hex()}") from exc
        return shell

    def recycle(self, slot: Any) -> None:
        """``slot`` left memory for good: keep it as a shell for a later :meth:`decode`.

        The caller must hold no reference to it any more: a decode overwrites it.
        """
        layout = self._last
        if layout is not None:
            pool = self._pools[layout.ident]
            if len(pool) < POOL_SIZE and layout.fits(slot):
                pool.append(slot)

    def _fitting(self, slot: Any) -> tuple[Layout | None, tuple[Any, ...] | None]:
        """A layout that fits ``slot`` and its values; a new layout if none does."""
        for layout in self.layouts.values():
            if layout is self._last:  # encode read it already
                continue
            values = layout.read(slot)
            if values is not None:
                self._last = layout
                return layout, values
        if len(self.layouts) + self._refused >= MAX_LAYOUTS:
            return None, None
        nodes = describe(slot)
        if nodes is None:  # this shape has no layout: after a few, stop walking slots
            self._refused += 1
            return None, None
        layout = self._learn(nodes, pickle.dumps(slot, protocol=_PROTOCOL))
        values = layout.read(slot)
        if values is not None:
            self._last = layout
        return layout, values

    def _learn(self, nodes: tuple[_Node, ...], template: bytes) -> Layout:
        layout = Layout(nodes, template)
        known = self.layouts.get(layout.ident)
        if known is not None:
            return known
        self.layouts[layout.ident] = layout
        self._pools[layout.ident] = []
        return layout

    def __getstate__(self) -> dict[str, Any]:
        return {"layouts": [(layout.nodes, layout.template) for layout in self.layouts.values()],
                "n_pickled": self.n_pickled}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.n_pickled = state["n_pickled"]
        for nodes, template in state["layouts"]:
            self._learn(nodes, template)
