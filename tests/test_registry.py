"""One registry of method configs: names, dispatch by type, options checked against the config's fields."""

import dataclasses

import pytest

from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.registry import METHODS
from deepzip.train import PruneConfig, QuantizeConfig


def test_every_method_is_a_frozen_config_with_a_handler():
    assert METHODS.names("prune") == ["global", "uniform", "erk", "sensitivity", "structured", "fraction", "threshold",
                                      "random", "nm", "wanda", "sparsegpt", "owl", "l0"]
    assert METHODS.names("quantize") == ["kmeans", "weighted", "uniform"]
    for family in ("prune", "quantize"):
        for name in METHODS.names(family):
            cls = METHODS.config_class(family, name)
            assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen and cls.method == name
            config = cls(curves={}, base_accuracy=0.5) if name == "sensitivity" else \
                cls(sparsity=0.5) if name == "random" else cls()
            assert callable(METHODS.handler(config))
            with pytest.raises(dataclasses.FrozenInstanceError):
                config.exclude = ("x",)


def test_the_cli_offers_exactly_the_registry_names():
    fields = {f.name: f for f in dataclasses.fields(PruneConfig)}
    # prune + retrain from labels offers the weight-only methods; the calibration ones need unlabeled data
    weight_only = [n for n in METHODS.names("prune") if n not in ("wanda", "sparsegpt", "owl")]
    assert list(fields["method"].metadata["choices"]) == P.method_names(calibration=False) == weight_only
    assert P.method_names(calibration=True) == ["wanda", "sparsegpt", "owl"]
    fields = {f.name: f for f in dataclasses.fields(QuantizeConfig)}
    assert list(fields["method"].metadata["choices"]) == METHODS.names("quantize")


def test_the_papers_defaults():
    assert P.GlobalMagnitude().sparsity == 0.9 and P.NM() == P.NM(n=2, m=4)
    assert P.StdThreshold().quality == 1.0 and P.Structured().norm == "l1" and P.Structured().exclude is None
    assert Q.KMeans().init == "linear" and Q.KMeans().bits is None  # None: 8-bit conv, 5-bit fc
    assert Q.PAPER_BITS["conv"] == 8 and Q.PAPER_BITS["fc"] == 5


@pytest.mark.parametrize("make, error, message", [
    (lambda: P.GlobalMagnitude(sparsity=1.0), ValueError, r"sparsity must be in \[0.0, 1.0\), got 1.0"),
    (lambda: P.GlobalMagnitude(sparsity="0.5"), TypeError, "sparsity must be a number"),
    (lambda: P.GlobalMagnitude(round_to=0), ValueError, "round_to must be >= 1"),
    (lambda: P.NM(n=5, m=4), ValueError, "N:M needs N <= M, got 5:4"),
    (lambda: P.NM(n=2.5), TypeError, "n must be an integer"),
    (lambda: P.UniformMagnitude(scales={"fc1": -1}), ValueError, r"scales\['fc1'\] must be in"),
    (lambda: P.LayerFraction(layer_sparsity={"fc": 1.5}), ValueError, r"layer_sparsity\['fc'\] must be in"),
    (lambda: P.Structured(norm="l3"), ValueError, "norm='l3' is not allowed; choose from l1, l2"),
    (lambda: P.RandomPruning(), ValueError, "exactly one of sparsity"),
    (lambda: P.RandomPruning(sparsity=0.5, allocation="magic"), ValueError, "allocation='magic' is not allowed"),
    (lambda: P.Sensitivity(sparsity=0.5), ValueError, "needs curves= and base_accuracy="),
    (lambda: P.GlobalMagnitude(exclude="conv1"), TypeError, "exclude must be a list of layer or parameter names"),
    (lambda: Q.KMeans(bits=0), ValueError, "bits must be an integer in 1..16, got 0"),
    (lambda: Q.KMeans(init="kmeans++"), ValueError, "init='kmeans\\+\\+' is not allowed; choose from linear"),
])
def test_configs_validate_on_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_keyword_options_are_checked_against_the_methods_fields():
    with pytest.raises(TypeError, match="prune method 'uniform' takes no option 'scale', 'excludes'; its options: "
                                        "exclude, extra, sparsity, round_to, scales"):
        P.resolve(None, "uniform", scale={"fc1": 0.5}, excludes=["fc1"])
    with pytest.raises(TypeError, match="prune method 'threshold' takes no option 'sparsity'"):
        P.resolve(None, "threshold", sparsity=0.9)
    with pytest.raises(TypeError, match="prune method 'nm' takes no option 'sparsity'"):
        P.resolve(0.9, "nm")
    with pytest.raises(TypeError, match=r"give a prune config alone, with its options inside it \(got also exclude\)"):
        P.resolve(P.NM(), exclude=["fc1"])
    with pytest.raises(ValueError, match="unknown prune method 'magic'; allowed: global, uniform"):
        P.resolve(None, "magic")
    assert P.resolve(0.8) == P.GlobalMagnitude(sparsity=0.8)
    assert P.resolve(None, "erk", sparsity=0.7, exclude=["conv1"]) == P.ERK(sparsity=0.7, exclude=("conv1",))
    assert Q.resolve(4, "uniform") == Q.Uniform(bits=4)
    assert Q.resolve({"fc": 3}, init="density") == Q.KMeans(bits={"fc": 3}, init="density")


def test_a_config_of_the_other_family_is_refused():
    with pytest.raises(TypeError, match="KMeans is a quantize method, not a prune one"):
        P.resolve(Q.KMeans())
    with pytest.raises(TypeError, match="method must be a prune method name"):
        P.resolve(0.5, 3)
