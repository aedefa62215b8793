import pytest
import torch
from torch import nn

from deepzip import models
from deepzip import prune as P


def test_global_thresholds_once_across_layers():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[1].weight.copy_(torch.tensor([[0.1, 0.2], [5.0, 0.3]]))
    P.prune(model, 0.5)
    # the 4 largest of all 8 magnitudes are 5, 4, 3, 2: three in the first layer, one in the second
    assert P.get_masks(model)["0.weight"].tolist() == [[False, True], [True, True]]
    assert P.get_masks(model)["1.weight"].tolist() == [[False, False], [True, False]]
    report = P.sparsity_report(model)
    assert [l["kept"] for l in report["layers"]] == [0.75, 0.25] and report["sparsity"] == 0.5


def test_every_method_on_lenet5_meets_its_target():
    for method, kwargs, expected in [("global", {}, 0.92), ("uniform", {}, 0.92), ("erk", {}, 0.92),
                                     ("random", {"seed": 1}, 0.92), ("nm", {"n": 2, "m": 4}, 0.5)]:
        model = models.build("lenet5", seed=0)
        P.prune(model, 0.92 if method != "nm" else None, method, **kwargs)
        assert P.sparsity_report(model)["sparsity"] == pytest.approx(expected, abs=1e-4), method


def test_fraction_by_kind_and_exclusion_and_round_to():
    model = models.build("lenet5", seed=0)
    P.prune(model, None, "fraction", layer_sparsity={"fc": 0.92, "conv": 0.66, "fc2": 0.5})
    kept = {l["layer"]: l["kept"] for l in P.sparsity_report(model)["layers"]}
    assert kept == {"conv1.weight": 0.34, "conv2.weight": 0.34, "fc1.weight": 0.08, "fc2.weight": 0.5}
    model = models.build("lenet5", seed=0)
    P.prune(model, 0.9, "uniform", exclude=["conv1"], round_to=8)
    report = {l["layer"]: l for l in P.sparsity_report(model)["layers"]}
    assert report["conv1.weight"]["kept"] == 1.0
    assert all(l["nonzero"] % 8 == 0 for n, l in report.items() if n != "conv1.weight")


def test_bad_inputs_name_the_allowed_values():
    model = models.build("lenet300_100", seed=0)
    with pytest.raises(ValueError, match="cannot exclude unknown layer.*fc9.*prunable: fc1.weight"):
        P.prune(model, 0.5, exclude=["fc9"])
    with pytest.raises(ValueError, match="unknown prune method 'magic'; allowed: global"):
        P.prune(model, 0.5, "magic")
    with pytest.raises(ValueError, match="nothing to prune"):
        P.prune(nn.Sequential(nn.ReLU()), 0.5)
    with pytest.raises(ValueError, match="layer_sparsity: unknown layer"):
        P.prune(model, None, "fraction", layer_sparsity={"fc7": 0.5})
    assert not P.is_pruned(model)


def test_transformer_encoder_and_embedding_with_extra_parameters():
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                    enable_nested_tensor=False)
    model = nn.ModuleDict({"embed": nn.Embedding(50, 16), "encoder": encoder})
    extra = [n for n, _ in model.named_parameters() if n.endswith("in_proj_weight")]
    P.prune(model, 0.7, "global", extra=extra)
    names = {l["layer"] for l in P.sparsity_report(model, extra)["layers"]}
    assert "embed.weight" in names and "encoder.layers.1.self_attn.in_proj_weight" in names
    assert "encoder.layers.0.linear1.weight" in names and "encoder.layers.0.self_attn.out_proj.weight" in names
    assert P.sparsity_report(model, extra)["sparsity"] == pytest.approx(0.7, abs=1e-4)
    tokens = torch.randint(0, 50, (2, 5))
    out = model["encoder"](model["embed"](tokens))
    out.sum().backward()
    for name, mask in P.get_masks(model).items():
        grad = dict(model.named_parameters())[name].grad
        assert (grad[~mask] == 0).all()
