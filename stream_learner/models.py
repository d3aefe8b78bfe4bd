"""Build River models and metrics from configuration, without ``eval``.

A pipeline is a list of steps, each naming a class inside the ``river`` package
by ``module.Class`` and giving its parameters; a parameter that is itself a
table with a ``step`` key is built the same way (e.g. an optimizer)::

    [[model.pipeline]]
    step = "preprocessing.StandardScaler"

    [[model.pipeline]]
    step = "linear_model.LogisticRegression"
    params = { optimizer = { step = "optim.SGD", params = { lr = 0.05 } } }

Anything else comes from a factory, ``package.module:function``, called with
no arguments and returning a River estimator.

Examples
--------
>>> from stream_learner.settings import ModelSettings
>>> spec = ModelSpec.from_settings(ModelSettings(task="classification", pipeline=(
...     {"step": "preprocessing.StandardScaler"},
...     {"step": "linear_model.LogisticRegression"})))
>>> [type(step).__name__ for step in spec.build().steps.values()]
['StandardScaler', 'LogisticRegression']
>>> spec.build_metric()
Accuracy: 0.00%
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from river import anomaly, base, compose, metrics, time_series

from stream_learner.errors import ModelConfigError
from stream_learner.settings import ModelSettings

__all__ = [
    "DEFAULT_METRICS", "ModelSpec", "build_step", "final_step", "resolve_class", "warm_plans",
]

DEFAULT_METRICS = {
    "classification": "metrics.Accuracy",
    "regression": "metrics.MAE",
    "anomaly": "metrics.ROCAUC",
    "forecasting": "metrics.MAE",
}
#: River base classes the model (or its pipeline's last step) must be, by task.
_TASK_BASES: dict[str, dict[str, type]] = {
    "classification": {"base.Classifier": base.Classifier},
    "regression": {"base.Regressor": base.Regressor},
    "anomaly": {"base.AnomalyDetector": base.AnomalyDetector,
                "base.AnomalyFilter": base.AnomalyFilter},
    "forecasting": {"time_series.base.Forecaster": time_series.base.Forecaster},
}


def resolve_class(path: str) -> type:
    """Find ``module.Class`` inside the ``river`` package (nothing outside it).

    Only a public class defined by River itself is returned: a name that River
    merely imports from elsewhere, a private module, or anything that is not a
    class is refused. Nothing is evaluated.

    Examples
    --------
    >>> resolve_class("linear_model.LinearRegression").__name__
    'LinearRegression'
    >>> resolve_class("os.system")
    Traceback (most recent call last):
    ...
    stream_learner.errors.ModelConfigError: unknown River class 'os.system' (expected ...)
    """
    module_name, _, class_name = path.rpartition(".")
    hint = "expected 'module.Class' inside river, e.g. 'linear_model.LogisticRegression'"
    if not module_name or not class_name[:1].isupper() or module_name.startswith("_"):
        raise ModelConfigError(f"unknown River class {path!r} ({hint})")
    if any(not part.isidentifier() or part.startswith("_") for part in path.split(".")):
        raise ModelConfigError(f"unknown River class {path!r} ({hint})")
    try:
        module = importlib.import_module(f"river.{module_name}")
        cls = getattr(module, class_name)
    except (ImportError, AttributeError, ValueError):
        raise ModelConfigError(f"unknown River class {path!r} ({hint})") from None
    if not inspect.isclass(cls):
        raise ModelConfigError(f"{path!r} is not a class ({hint})")
    if not (cls.__module__ == "river" or cls.__module__.startswith("river.")):
        raise ModelConfigError(f"{path!r} is not a River class ({hint})")
    return cls


def _build_value(value: Any, seed: int) -> Any:
    """A parameter as River expects it: nested steps built, tables and arrays as dicts and lists."""
    if isinstance(value, Mapping):
        if "step" in value:
            return build_step(value, seed)
        return {k: _build_value(v, seed) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_build_value(v, seed) for v in value]
    return value


def build_step(step: Mapping[str, Any], seed: int = 42) -> Any:
    """Instantiate one ``{step = "module.Class", params = {...}}`` table.

    A ``seed`` parameter is filled from the model seed when the class takes one
    and the table does not set it, so that runs are reproducible.
    """
    unknown = set(step) - {"step", "params"}
    if unknown or "step" not in step:
        raise ModelConfigError(
            f"pipeline step {dict(step)!r}: expected keys 'step' and optional 'params'"
        )
    raw_params = step.get("params", {})
    if not isinstance(raw_params, Mapping):
        raise ModelConfigError(
            f"pipeline step {step['step']!r}: 'params' must be a table, got {raw_params!r}"
        )
    cls = resolve_class(str(step["step"]))
    params = {k: _build_value(v, seed) for k, v in raw_params.items()}
    accepted = inspect.signature(cls).parameters
    if "seed" in accepted and "seed" not in params:
        params["seed"] = seed
    try:
        return cls(**params)
    except Exception as exc:  # any constructor validation error is a configuration error
        raise ModelConfigError(
            f"pipeline step {step['step']!r}: {type(exc).__name__}: {exc}"
        ) from None


def _load_factory(path: str) -> Callable[[], Any]:
    module_name, _, func_name = path.partition(":")
    if not module_name or not func_name:
        raise ModelConfigError(f"model.factory {path!r}: expected 'package.module:function'")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelConfigError(f"model.factory {path!r} cannot be imported: {exc}") from None
    if not callable(func):
        raise ModelConfigError(f"model.factory {path!r} is not callable")
    return func  # type: ignore[no-any-return]


def final_step(model: Any) -> Any:
    """The last step of a pipeline, or the model itself.

    Examples
    --------
    >>> from river import linear_model, preprocessing
    >>> type(final_step(preprocessing.StandardScaler() | linear_model.LinearRegression())).__name__
    'LinearRegression'
    """
    if isinstance(model, compose.Pipeline):
        return list(model.steps.values())[-1]
    return model


def warm_plans(model: Any) -> Any:
    """Build now the execution plans River pipelines build on their first event; returns ``model``.

    A plan is a cache (each step's role and the keyword arguments its methods
    take, found with :func:`inspect.signature`): the model predicts and learns
    exactly as without it. Building it costs about as much as a few events, so
    a prototype copied for every new key should carry it.

    Examples
    --------
    >>> from river import linear_model, preprocessing
    >>> model = warm_plans(preprocessing.StandardScaler() | linear_model.LinearRegression())
    >>> model._plan is not None
    True
    """
    if isinstance(model, compose.Pipeline):
        for step in model.steps.values():
            warm_plans(step)
        build = getattr(model, "_build_plan", None)
        if callable(build) and getattr(model, "_plan", None) is None:
            build()
    return model


def _check_task(task: str, model: Any) -> None:
    expected = tuple(_TASK_BASES[task].values())
    if not isinstance(model, expected) and not isinstance(final_step(model), expected):
        names = " or ".join(_TASK_BASES[task])
        raise ModelConfigError(
            f"model.task is {task!r} but the model is a {type(model).__name__}, "
            f"not a River {names}"
        )


@dataclass(frozen=True)
class ModelSpec:
    """A validated recipe for the model and metric of one shard.

    ``build()`` returns a fresh, untrained estimator each time; ``config_hash``
    identifies the configuration (checkpoints refuse to load under another).
    """

    settings: ModelSettings

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> ModelSpec:
        """Check the configuration once by building it, then return the spec."""
        spec = cls(settings)
        _check_task(settings.task, spec._build_configured())
        model = spec.build()
        if settings.task == "anomaly" and not isinstance(final_step(model), base.AnomalyFilter):
            raise ModelConfigError(
                "model.task is 'anomaly': set model.anomaly_threshold or model.anomaly_quantile, "
                "or end the pipeline with anomaly.ThresholdFilter / anomaly.QuantileFilter"
            )
        metric = spec.build_metric()
        if settings.task == "forecasting":
            works = isinstance(metric, metrics.base.RegressionMetric)
        else:
            works = metric.works_with(model)
        if not works:
            raise ModelConfigError(
                f"model.metric {type(metric).__name__} does not work with {type(model).__name__}"
            )
        return spec

    @property
    def task(self) -> str:
        """The task kind: ``classification``, ``regression``, ``anomaly`` or ``forecasting``."""
        return self.settings.task

    @property
    def scope(self) -> str:
        """``partition`` (one model per shard) or ``key``; forecasting is always per key."""
        return "key" if self.settings.task == "forecasting" else self.settings.scope

    @property
    def config_hash(self) -> str:
        """SHA-256 over the model configuration, stable across runs."""
        doc = self.settings.model_dump(mode="json")
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def build(self) -> Any:
        """A fresh, untrained River estimator."""
        s = self.settings
        model = self._build_configured()
        if s.task != "anomaly":
            return model
        if s.anomaly_threshold is not None:
            return anomaly.ThresholdFilter(model, threshold=s.anomaly_threshold)
        if s.anomaly_quantile is not None:
            return anomaly.QuantileFilter(model, q=s.anomaly_quantile)
        return model

    def _build_configured(self) -> Any:
        """The pipeline or factory model, before any anomaly threshold wraps it."""
        s = self.settings
        if s.factory:
            try:
                return _load_factory(s.factory)()
            except ModelConfigError:
                raise
            except Exception as exc:  # operator code: report it as configuration
                raise ModelConfigError(
                    f"model.factory {s.factory!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
        steps = [build_step(step, s.seed) for step in s.pipeline]
        return steps[0] if len(steps) == 1 else compose.Pipeline(*steps)

    def build_metric(self) -> metrics.base.Metric:
        """A fresh online metric (the task's default when none is configured)."""
        path = self.settings.metric or DEFAULT_METRICS[self.settings.task]
        name = path.removeprefix("metrics.")
        cls = getattr(metrics, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, metrics.base.Metric)):
            raise ModelConfigError(f"model.metric {path!r}: not a river.metrics class")
        try:
            return cls()
        except Exception as exc:
            raise ModelConfigError(
                f"model.metric {path!r} cannot be built without parameters: {exc}"
            ) from None
