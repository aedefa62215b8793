"""Sensitivity-weighted, per-row weight sharing with outliers and error feedback (SqueezeLLM; GPTQ's sweep)."""

import copy

import pytest
import torch
from torch import nn

from deepzip import prune as P
from deepzip import quantize as Q

transformers = pytest.importorskip("transformers")


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    return transformers.BertModel(config).eval()


def statistics(model, batches):
    """Stand-in for deepzip.calibrate.input_statistics: ||X_j||^2 and X^T X of every Linear's inputs."""
    sq, gram, hooks = {}, {}, []

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            sq[name] = sq.get(name, 0) + (x * x).sum(0)
            gram[name] = gram.get(name, 0) + x.T @ x
        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(hook(name)))
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for h in hooks:
        h.remove()
    return sq, gram


EMBEDDINGS = ["embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"]
IDS = [torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(i)) for i in range(3)]


def test_weighted_kmeans_lowers_the_weighted_error_on_skewed_weights():
    # per-row codebooks of a weight matrix whose importances are per input feature, a few features
    # 100x more important (as ||X_j||^2 is in transformers, whose activations have outlier features)
    ratios = {"linear": [], "density": []}
    rows = torch.arange(64)[:, None]
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(64, 256, generator=g) * (1 + 3 * (torch.rand(64, 256, generator=g) < 0.02))  # skewed tails
        column = torch.ones(256)
        column[torch.randperm(256, generator=g)[:12]] = 100.0
        s = column.expand(64, 256)
        for init in ratios:
            cb, index = Q.kmeans_rows(w, 8, init)
            cb_w, index_w = Q.kmeans_rows(w, 8, init, weights=s)
            ratios[init].append(Q.weighted_error(w, cb_w[rows, index_w], s) / Q.weighted_error(w, cb[rows, index], s))
            # plain k-means is the better one on the plain error
            assert Q.weighted_error(w, cb[rows, index]) < Q.weighted_error(w, cb_w[rows, index_w])
    # measured: linear 0.67-0.79 (mean 0.73), density 0.57-0.84 (mean 0.70)
    for init, found in ratios.items():
        assert max(found) < 0.9 and sum(found) / len(found) < 0.8, (init, found)


def test_optimal_weighted_is_the_weighted_optimum():
    w = torch.tensor([0.0, 0.1, 0.2, 1.0, 1.1, 5.0])
    s = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1000.0])
    codebook, index = Q.kmeans_1d(w, 2, "optimal", weights=s)
    assert codebook.tolist() == pytest.approx([0.48, 5.0])  # the heavy value gets a centroid of its own


def test_kmeans_rows_matches_kmeans_1d_row_by_row():
    w = torch.randn(6, 50)
    alive = torch.rand(6, 50) > 0.3
    s = torch.rand(6, 50)
    codebook, index = Q.kmeans_rows(w, 4, weights=s, alive=alive)
    for r in range(6):
        cb, idx = Q.kmeans_1d(w[r][alive[r]], 4, weights=s[r][alive[r]])
        assert torch.equal(codebook[r, : len(cb)], cb) and torch.equal(index[r][alive[r]], idx)
        assert (index[r][~alive[r]] == 0).all()


def test_error_feedback_lowers_the_output_error():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 48, generator=g) @ torch.randn(48, 48, generator=g)  # correlated inputs
    w = torch.randn(24, 48, generator=g)
    gram = (x.T @ x).double()
    codebook, plain = Q.kmeans_rows(w, 4)
    swept, _ = Q.feedback_assign(w, codebook, gram)
    rows = torch.arange(24)[:, None]
    error_plain = torch.linalg.norm(x @ w.T - x @ codebook[rows, plain].T)
    error_swept = torch.linalg.norm(x @ w.T - x @ codebook[rows, swept].T)
    assert error_swept < 0.9 * error_plain, (float(error_swept), float(error_plain))  # measured 0.81x


def test_quantize_tiny_bert_per_row_outliers_feedback_and_state():
    model = tiny_bert()
    sq, gram = statistics(model, IDS)
    reference = model(IDS[0]).last_hidden_state
    cfg = Q.WeightedKMeans(bits=3, importance="calibration", outliers=0.01, error_feedback=True)
    Q.quantize(model, cfg, sensitivity=sq, gram=gram)
    query = model.encoder.layer[0].attention.self.query
    assert query.weight_codebook.shape == (32, 8) and query.weight_index.dtype == torch.uint8
    assert model.embeddings.word_embeddings.weight_codebook.dim() == 1  # embeddings: one codebook per layer
    mask, values = Q.outliers(model)["encoder.layer.0.attention.self.query.weight"]
    assert int(mask.sum()) == 10 and torch.equal(query.weight[mask], values)  # 1% of 1024, exact
    out = model(IDS[0]).last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), 0)
    assert cosine > 0.95  # measured 0.987 at 3 bits on this random model
    # deepcopy, state_dict round trip into a fresh model, finalize: all exact
    assert torch.equal(copy.deepcopy(model)(IDS[0]).last_hidden_state, out)
    fresh = tiny_bert(seed=1)
    Q.load_state_dict(fresh, model.state_dict())
    assert torch.equal(fresh(IDS[0]).last_hidden_state, out)
    # fine-tuning: gradients reach the per-row centroids and the outliers
    out.sum().backward()
    assert query.weight_codebook.grad.shape == (32, 8) and query.weight_outliers.grad.shape == (10,)
    Q.finalize(fresh)
    assert isinstance(fresh.encoder.layer[0].attention.self.query.weight, nn.Parameter)
    assert torch.equal(fresh(IDS[0]).last_hidden_state, out)


def test_pruned_positions_stay_zero_and_are_never_outliers():
    model = tiny_bert()
    P.prune(model, 0.5)
    Q.quantize(model, Q.WeightedKMeans(bits=2, importance="none", outliers=0.02))
    for name, (mask, _) in Q.outliers(model).items():
        keep = P.get_masks(model)[name]
        assert not (mask & ~keep).any()
    layer = model.encoder.layer[1].output.dense
    assert (layer.weight[~layer.weight_mask] == 0).all()


def test_fisher_diagonal_feeds_weighted_kmeans():
    model = tiny_bert()
    fisher = Q.fisher_diagonal(model, IDS, lambda m, b: m(b).last_hidden_state.pow(2).mean(), progress=False)
    assert fisher["encoder.layer.0.attention.self.query.weight"].shape == (32, 32)
    assert all(p.grad is None for p in model.parameters())
    Q.quantize(model, Q.WeightedKMeans(bits=4), sensitivity=fisher)
    assert len(Q.codebooks(model)) == len(fisher)


def test_bad_configs_and_data_give_clear_errors():
    with pytest.raises(ValueError, match="importance='bogus' is not allowed; choose from none, calibration, fisher"):
        Q.WeightedKMeans(importance="bogus")
    with pytest.raises(ValueError, match="granularity='col' is not allowed; choose from layer, row"):
        Q.WeightedKMeans(granularity="col")
    with pytest.raises(ValueError, match=r"outliers must be in \[0.0, 0.5\)"):
        Q.WeightedKMeans(outliers=0.7)
    with pytest.raises(TypeError, match="error_feedback must be True or False"):
        Q.WeightedKMeans(error_feedback="yes")
    with pytest.raises(ValueError, match=r"damp must be in \(0, 1\]"):
        Q.WeightedKMeans(damp=0)
    with pytest.raises(TypeError, match="takes no option 'granularty'"):
        Q.quantize(tiny_bert(), 4, "weighted", granularty="row")
    model = tiny_bert()
    sq, gram = statistics(model, IDS[:1])
    with pytest.raises(ValueError, match="importance='fisher' needs sensitivity for embeddings.word_embeddings.weight"):
        Q.quantize(model, Q.WeightedKMeans())
    with pytest.raises(ValueError, match="importance='fisher' needs a sensitivity of .* shape"):
        Q.quantize(model, Q.WeightedKMeans(exclude=EMBEDDINGS), sensitivity=sq)
    with pytest.raises(ValueError, match="error_feedback needs gram"):
        Q.quantize(model, Q.WeightedKMeans(importance="calibration", error_feedback=True), sensitivity=sq)
    with pytest.raises(ValueError, match="'nope' is not a layer or parameter of this model"):
        Q.quantize(model, Q.WeightedKMeans(importance="calibration"), sensitivity={**sq, "nope": sq["pooler.dense"]})
    with pytest.raises(ValueError, match="sensitivity given, but this WeightedKMeans has importance='none'"):
        Q.quantize(model, Q.WeightedKMeans(importance="none"), sensitivity=sq)
    with pytest.raises(TypeError, match="sensitivity and gram are data of the weighted method"):
        Q.quantize(model, 4, sensitivity=sq)
    assert not Q.shared_layers(model)  # every failure left the model unchanged
