"""study/data: every zoo model has its published ImageNet accuracy, every line a primary source."""

import re

from study.models import available, options_of
from study.report.published import ACCURACY_BENCHMARKS, read_published

# A primary source names a table, figure or section of a paper, the paper's arXiv id, or a
# repository file or doc page.
PRIMARY = re.compile(r"Table \d|Fig\. \d|Sec\. \d|arXiv:\d{4}\.\d{4,5}|README|docs")


def test_every_zoo_model_has_a_published_top1_with_a_primary_source():
    accuracy = read_published("accuracy")
    top1 = accuracy[accuracy["benchmark"] == "imagenet_top1"]
    assert sorted(set(available()) - set(top1["model"])) == []
    assert set(accuracy["benchmark"]) <= set(ACCURACY_BENCHMARKS)
    for _, line in accuracy.iterrows():
        assert PRIMARY.search(line["source"]), line["source"]
    v0 = top1[top1["model"] == "vmamba_tiny_v0"].iloc[0]
    assert v0["value"] == 82.2 and "22" in v0["source"]


def test_ablation_lines_name_an_option_the_model_has():
    ablation = read_published("ablation")
    assert len(ablation) > 0
    for _, line in ablation.iterrows():
        assert line["options"] in options_of(line["model"]), line["options"]
        assert line["benchmark"] in ACCURACY_BENCHMARKS
        assert PRIMARY.search(line["source"]), line["source"]
    # each ablated figure has its default beside it, from the same table
    for (model, bench), part in ablation.groupby(["model", "benchmark"]):
        assert "default" in set(part["options"]) and len(part) > 1, (model, bench)
