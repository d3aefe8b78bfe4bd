"""Building River models and metrics from configuration."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap

import pytest
from river import compose, ensemble, forest, linear_model, metrics, optim, preprocessing, tree

from stream_learner.errors import ModelConfigError
from stream_learner.models import ModelSpec, build_step, resolve_class
from stream_learner.settings import ModelSettings

LOGREG_SGD = (
    {"step": "preprocessing.StandardScaler"},
    {
        "step": "linear_model.LogisticRegression",
        "params": {"optimizer": {"step": "optim.SGD", "params": {"lr": 0.05}}, "l2": 0.001},
    },
)


def spec(**kwargs) -> ModelSpec:
    return ModelSpec.from_settings(ModelSettings(**kwargs))


# -- pipelines ----------------------------------------------------------------------------


def test_pipeline_with_nested_step_params():
    model = spec(task="classification", pipeline=LOGREG_SGD).build()
    assert isinstance(model, compose.Pipeline)
    scaler, logreg = model.steps.values()
    assert isinstance(scaler, preprocessing.StandardScaler)
    assert isinstance(logreg, linear_model.LogisticRegression)
    assert logreg.l2 == 0.001
    assert isinstance(logreg.optimizer, optim.SGD)
    assert logreg.optimizer.learning_rate == 0.05


def test_nested_steps_inside_a_list_are_built():
    union_params = {
        "step": "ensemble.VotingClassifier",
        "params": {
            "models": [
                {"step": "linear_model.LogisticRegression"},
                {"step": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}},
                {"step": "linear_model.Perceptron"},
            ]
        },
    }
    voting = build_step(union_params)
    assert isinstance(voting, ensemble.VotingClassifier)
    members = list(voting)
    assert [type(m).__name__ for m in members] == [
        "LogisticRegression",
        "HoeffdingTreeClassifier",
        "Perceptron",
    ]
    assert members[1].grace_period == 50


def test_single_step_is_not_wrapped_in_a_pipeline():
    model = spec(
        task="classification", pipeline=({"step": "tree.HoeffdingTreeClassifier"},)
    ).build()
    assert type(model) is tree.HoeffdingTreeClassifier


def test_build_returns_a_fresh_model_each_time():
    s = spec(task="classification", pipeline=LOGREG_SGD)
    first, second = s.build(), s.build()
    assert first is not second
    first.learn_one({"x": 1.0}, True)
    assert second["LogisticRegression"].weights == {}
    assert first["LogisticRegression"].weights != {}


def test_default_settings_build_the_embedded_default_model():
    model = spec().build()
    assert [type(s).__name__ for s in model.steps.values()] == [
        "StandardScaler",
        "LinearRegression",
    ]
    assert model["LinearRegression"].intercept_lr.learning_rate == 0.1


# -- seeds --------------------------------------------------------------------------------


def test_seed_is_filled_for_classes_that_take_one():
    assert "seed" in inspect.signature(forest.ARFClassifier).parameters
    assert "seed" not in inspect.signature(tree.HoeffdingTreeClassifier).parameters
    model = spec(
        task="classification", seed=1234, pipeline=({"step": "forest.ARFClassifier"},)
    ).build()
    assert isinstance(model, forest.ARFClassifier)
    assert model.seed == 1234


def test_explicit_seed_param_wins_over_model_seed():
    step = build_step({"step": "forest.ARFClassifier", "params": {"seed": 5}}, seed=1234)
    assert step.seed == 5


def test_seed_is_filled_in_nested_steps():
    step = build_step(
        {
            "step": "ensemble.BaggingClassifier",
            "params": {"model": {"step": "forest.ARFClassifier", "params": {"n_models": 2}}},
        },
        seed=99,
    )
    assert step.seed == 99
    assert step.model.seed == 99


def test_seed_is_not_passed_to_classes_without_one():
    # Would be a TypeError (-> ModelConfigError) if seed were passed blindly.
    step = build_step({"step": "tree.HoeffdingTreeClassifier"}, seed=3)
    assert isinstance(step, tree.HoeffdingTreeClassifier)


def test_same_seed_gives_identical_randomised_models():
    def run(seed: int) -> list:
        s = spec(
            task="classification",
            seed=seed,
            pipeline=({"step": "forest.ARFClassifier", "params": {"n_models": 3}},),
        )
        model = s.build()
        out = []
        for i in range(200):
            x = {"a": (i * 7919) % 101 / 100.0, "b": (i * 104729) % 97 / 96.0}
            out.append(model.predict_proba_one(x))
            model.learn_one(x, x["a"] + x["b"] > 1.0)
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


# -- refused configurations ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "linear_model.NoSuchModel",
        "no_such_module.Thing",
        "os.system",
        "os.path.Join",
        "subprocess.Popen",
        "builtins.Exec",
        "LogisticRegression",
        "linear_model.logisticregression",
        "linear_model.log_reg",
        "_private.Thing",
        ".Foo",
        "",
    ],
)
def test_unknown_or_outside_class_is_refused(path):
    with pytest.raises(ModelConfigError, match="unknown River class"):
        resolve_class(path)


def test_non_class_attribute_is_refused():
    with pytest.raises(ModelConfigError, match="is not a class"):
        resolve_class("datasets.base.REG")


def test_refused_class_in_a_pipeline_names_it():
    with pytest.raises(ModelConfigError, match=r"'os\.system'"):
        spec(pipeline=({"step": "os.system", "params": {"command": "true"}},))


def test_unknown_step_keys_are_refused():
    with pytest.raises(ModelConfigError) as info:
        build_step({"step": "preprocessing.StandardScaler", "parms": {"with_std": False}})
    msg = str(info.value)
    assert "'preprocessing.StandardScaler'" in msg
    assert "parms" in msg


def test_unknown_keys_in_a_nested_step_are_refused():
    with pytest.raises(ModelConfigError, match=r"optim\.SGD.*lrr|lrr.*optim\.SGD"):
        build_step(
            {
                "step": "linear_model.LogisticRegression",
                "params": {"optimizer": {"step": "optim.SGD", "lrr": 0.1}},
            }
        )


def test_wrong_constructor_param_names_the_step():
    with pytest.raises(ModelConfigError) as info:
        spec(
            task="classification",
            pipeline=(
                {"step": "preprocessing.StandardScaler"},
                {"step": "linear_model.LogisticRegression", "params": {"learning_rate": 0.1}},
            ),
        )
    msg = str(info.value)
    assert "pipeline step 'linear_model.LogisticRegression'" in msg
    assert "learning_rate" in msg


def test_wrong_param_in_nested_step_names_the_nested_step():
    with pytest.raises(ModelConfigError, match=r"pipeline step 'optim\.SGD'.*rate"):
        build_step(
            {
                "step": "linear_model.LogisticRegression",
                "params": {"optimizer": {"step": "optim.SGD", "params": {"rate": 0.1}}},
            }
        )


def test_task_mismatch_regressor_as_classification_is_refused():
    with pytest.raises(ModelConfigError) as info:
        spec(task="classification")  # default pipeline ends in LinearRegression
    msg = str(info.value)
    assert "'classification'" in msg
    assert "Pipeline" in msg
    assert "Classifier" in msg


def test_task_mismatch_classifier_as_regression_is_refused():
    with pytest.raises(ModelConfigError, match=r"'regression'.*Regressor"):
        spec(task="regression", pipeline=({"step": "tree.HoeffdingTreeClassifier"},))


def test_transformer_only_pipeline_is_refused():
    with pytest.raises(ModelConfigError, match="not a River Regressor"):
        spec(task="regression", pipeline=({"step": "preprocessing.StandardScaler"},))


def test_incompatible_metric_is_refused():
    with pytest.raises(ModelConfigError, match="Accuracy does not work with"):
        spec(task="regression", metric="metrics.Accuracy")
    with pytest.raises(ModelConfigError, match="MAE does not work with"):
        spec(task="classification", metric="metrics.MAE", pipeline=LOGREG_SGD)


@pytest.mark.parametrize("metric", ["metrics.NoSuchMetric", "metrics.base", "os.system", "Path"])
def test_unknown_metric_is_refused(metric):
    with pytest.raises(ModelConfigError, match=r"not a river\.metrics class"):
        spec(metric=metric)


# -- metrics ------------------------------------------------------------------------------


def test_default_metric_by_task():
    assert type(spec().build_metric()) is metrics.MAE
    assert type(spec(task="classification", pipeline=LOGREG_SGD).build_metric()) is (
        metrics.Accuracy
    )


@pytest.mark.parametrize("name", ["metrics.LogLoss", "LogLoss"])
def test_configured_metric_with_or_without_prefix(name):
    s = spec(task="classification", pipeline=LOGREG_SGD, metric=name)
    m = s.build_metric()
    assert type(m) is metrics.LogLoss
    assert m is not s.build_metric()


# -- factories ----------------------------------------------------------------------------

FACTORY_MODULE = """
from river import linear_model, preprocessing

CALLS = []
NOT_CALLABLE = 3


def make_classifier():
    CALLS.append(1)
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def make_regressor():
    return linear_model.LinearRegression()
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = "sl_test_factory_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def test_factory_builds_the_model(factory_module):
    s = spec(task="classification", factory=f"{factory_module}:make_classifier")
    module = importlib.import_module(factory_module)
    calls_after_check = len(module.CALLS)
    model = s.build()
    assert len(module.CALLS) == calls_after_check + 1  # a fresh model per build
    assert isinstance(model, compose.Pipeline)
    assert isinstance(model["LogisticRegression"], linear_model.LogisticRegression)


def test_factory_overrides_pipeline(factory_module):
    model = spec(factory=f"{factory_module}:make_regressor", pipeline=LOGREG_SGD).build()
    assert type(model) is linear_model.LinearRegression


def test_factory_task_mismatch_is_refused(factory_module):
    with pytest.raises(ModelConfigError, match="'regression'"):
        spec(task="regression", factory=f"{factory_module}:make_classifier")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("no_colon_here", "expected 'package.module:function'"),
        (":make", "expected 'package.module:function'"),
        ("some.module:", "expected 'package.module:function'"),
        ("sl_no_such_module_xyz:make", "cannot be imported"),
        ("{mod}:no_such_function", "cannot be imported"),
        ("{mod}:NOT_CALLABLE", "is not callable"),
    ],
)
def test_bad_factory_is_refused(factory_module, factory, message):
    path = factory.format(mod=factory_module)
    with pytest.raises(ModelConfigError, match=message) as info:
        spec(factory=path)
    assert repr(path) in str(info.value)


# -- config hash --------------------------------------------------------------------------


def test_config_hash_is_stable():
    a = spec(task="classification", pipeline=LOGREG_SGD).config_hash
    b = spec(task="classification", pipeline=LOGREG_SGD).config_hash
    assert a == b
    assert len(a) == 64
    int(a, 16)


def test_config_hash_ignores_key_order():
    reordered = (
        {"step": "preprocessing.StandardScaler"},
        {
            "params": {"l2": 0.001, "optimizer": {"params": {"lr": 0.05}, "step": "optim.SGD"}},
            "step": "linear_model.LogisticRegression",
        },
    )
    assert (
        spec(task="classification", pipeline=reordered).config_hash
        == spec(task="classification", pipeline=LOGREG_SGD).config_hash
    )


def test_config_hash_changes_when_a_param_changes():
    base = spec(task="classification", pipeline=LOGREG_SGD).config_hash
    changed = (
        LOGREG_SGD[0],
        {
            "step": "linear_model.LogisticRegression",
            "params": {"optimizer": {"step": "optim.SGD", "params": {"lr": 0.01}}, "l2": 0.001},
        },
    )
    assert spec(task="classification", pipeline=changed).config_hash != base
    assert spec(task="classification", pipeline=LOGREG_SGD, seed=43).config_hash != base
    assert spec(task="classification", pipeline=LOGREG_SGD[1:]).config_hash != base


def test_spec_exposes_the_task():
    assert spec().task == "regression"
    assert spec(task="classification", pipeline=LOGREG_SGD).task == "classification"


# -- known bugs ---------------------------------------------------------------------------


def test_step_without_step_key_is_a_model_config_error():
    with pytest.raises(ModelConfigError):
        spec(pipeline=({"params": {"intercept_lr": 0.1}},))


def test_params_not_a_table_is_a_model_config_error():
    with pytest.raises(ModelConfigError):
        spec(pipeline=({"step": "linear_model.LinearRegression", "params": 5},))


def test_constructor_validation_error_is_a_model_config_error():
    with pytest.raises(ModelConfigError, match="LogisticRegression"):
        spec(
            task="classification",
            pipeline=(
                {"step": "linear_model.LogisticRegression", "params": {"l1": 0.1, "l2": 0.1}},
            ),
        )


def test_metric_needing_arguments_is_a_model_config_error():
    with pytest.raises(ModelConfigError, match="FBeta"):
        spec(task="classification", pipeline=LOGREG_SGD, metric="metrics.FBeta")


@pytest.mark.parametrize("path", ["bandit.base.Counter", "tree.base.Queue"])
def test_classes_imported_into_river_modules_are_refused(path):
    with pytest.raises(ModelConfigError):
        resolve_class(path)
