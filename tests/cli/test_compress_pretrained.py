import json

import pytest

from deepzip.cli import main
from deepzip.prune import SparseGPT, Wanda
from deepzip.train.pretrained import PretrainedConfig

from ..models.test_pretrained import save_tiny

pytest.importorskip("transformers")


def test_the_cli_builds_the_same_configs_and_refuses_options_that_do_not_apply():
    assert PretrainedConfig().method_config() == Wanda(sparsity=0.5)
    assert PretrainedConfig(method="sparsegpt", n=2, m=4, percdamp=0.05).method_config() == \
        SparseGPT(n=2, m=4, percdamp=0.05)
    with pytest.raises(ValueError, match="percdamp=0.05 does not apply to method wanda"):
        PretrainedConfig(percdamp=0.05)
    with pytest.raises(ValueError, match="method='magnitude' is not allowed; choose from wanda, sparsegpt, owl"):
        PretrainedConfig(method="magnitude")


def test_compress_pretrained_writes_a_dz_and_its_report(tmp_path, capsys):
    save_tiny(tmp_path / "tiny")
    text = tmp_path / "text.txt"
    words = ["in", "the", "beginning", "god", "created", "heaven", "and", "earth", "light"]
    text.write_text("\n".join(" ".join(words[(i + j) % 9] for j in range(8)) for i in range(120)) + "\n")
    out = tmp_path / "tiny.dz"
    code = main(["compress-pretrained", str(tmp_path / "tiny"), "--calibration", str(text), "--out", str(out),
                 "--method", "sparsegpt", "--sparsity", "0.5", "--distill-steps", "3", "--bits", "6", "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "tiny.dz.json").read_text())
    assert report["evaluation_passages"] == 10 and 0.3 < report["sparsity"] < 0.5 and report["ratio_vs_fp32"] > 2
    assert out.stat().st_size == report["bytes"] and "held-out passages" in capsys.readouterr().out
    assert main(["compress-pretrained", str(tmp_path / "tiny"), "--calibration", str(text), "--limit", "0.1"]) == 2
    assert "--limit: 0.1 does not apply to method wanda" in capsys.readouterr().err
