"""What a run did: outcome counts and the summary ``stream-learner run`` prints.

Accounting: every input record ends as exactly one outcome, ``prediction``
(an event was scored), ``label`` (a label record was applied) or
``dead_letter`` (the record went to a dead-letter output), so
``records == predictions + label_records + dead_letters``. An event whose
inline label cannot be learned is a ``prediction``; its label additionally
goes to the ``learn_dead_letters`` output and is counted as
``inline_labels_rejected``, so that
``input_dead_letters + learn_dead_letters == dead_letters + inline_labels_rejected
+ labels_expired`` (``labels_expired``: label records accepted earlier whose event
never came; they leave the early-label buffer to the learn dead letters).
Records re-processed silently after a restore count only as ``replayed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Counts", "Summary"]


@dataclass
class Counts:
    """Outcome counts (see the module docstring for how they add up)."""

    records: int = 0
    predictions: int = 0
    label_records: int = 0
    dead_letters: int = 0
    labels: int = 0
    input_dead_letters: int = 0
    learn_dead_letters: int = 0
    inline_labels_rejected: int = 0
    labels_expired: int = 0

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these (once per poll batch: the counts that are not 0).

        Examples
        --------
        >>> total = Summary(records=3, labels=1)
        >>> total.add(Counts(records=2, dead_letters=1))
        >>> total.records, total.dead_letters, total.labels
        (5, 1, 1)
        """
        mine, theirs = self.__dict__, other.__dict__
        for name in _COUNTS:
            n = theirs[name]
            if n:
                mine[name] += n

    def counts_dict(self) -> dict[str, int]:
        """The counts as a JSON-ready object."""
        return {name: getattr(self, name) for name in Counts.__dataclass_fields__}


#: The names of the counts, in order.
_COUNTS = tuple(Counts.__dataclass_fields__)


@dataclass
class Summary(Counts):
    """What a run did; printed by ``stream-learner run`` at the end.

    ``labels`` counts labels learned (inline and label records);
    ``label_records`` counts label records applied (an input outcome).
    """

    replayed: int = 0
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    metric_name: str = ""
    #: label counters, coverage and mean delays over the shards owned at the end
    labelling: dict[str, float] = field(default_factory=dict)
    #: resident / parked models and their size over the shards owned at the end
    models: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Events scored (predictions) per second of wall time; label records not counted."""
        return self.predictions / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def records_per_s(self) -> float:
        """Input records (events, label records and dead letters) per second of wall time."""
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """The summary as a JSON-ready object."""
        return {
            **self.counts_dict(),
            "replayed": self.replayed,
            "elapsed_s": self.elapsed_s,
            "events_per_s": self.events_per_s,
            "records_per_s": self.records_per_s,
            "metric": self.metric_name,
            "online_metric": self.metrics,
            "labelling": self.labelling,
            "models": self.models,
        }

    def render(self) -> str:
        """A short human summary that names what it counts.

        Examples
        --------
        >>> Summary(records=600, predictions=300, label_records=300, labels=300,
        ...         elapsed_s=2.0, metric_name="Accuracy").render()  # doctest: +NORMALIZE_WHITESPACE
        '600 records (300 events, 300 label records, 0 dead letters) in 2.00s:
        150 events/s (300 records/s); 300 labels learned (coverage 0.0%, 0 expired);
        online Accuracy: n/a'
        """
        quality = ", ".join(f"{shard}: {value:.4f}" for shard, value in self.metrics.items())
        rejected = (
            f", +{self.inline_labels_rejected} rejected inline labels"
            if self.inline_labels_rejected
            else ""
        )
        lab = self.labelling
        expired = int(lab.get("expired_pending", 0) + lab.get("expired_early", 0))
        return (
            f"{self.records} records ({self.predictions} events, "
            f"{self.label_records} label records, {self.dead_letters} dead letters{rejected}) "
            f"in {self.elapsed_s:.2f}s: {self.events_per_s:,.0f} events/s "
            f"({self.records_per_s:,.0f} records/s); {self.labels} labels learned "
            f"(coverage {lab.get('coverage', 0.0):.1%}, {expired} expired)"
            + (f", {self.replayed} replayed silently" if self.replayed else "")
            + f"; online {self.metric_name}: {quality or 'n/a'}"
        )
