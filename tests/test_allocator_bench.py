"""tools/allocator_bench.py: each setting runs in its own interpreter with its GLIBC_TUNABLES (or,
for mallopt, kernels.malloc at run time), and the printed ratios are default ms / retain ms and
default ms / mallopt ms. The timings are not checked (a benchmark)."""

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("allocator_bench", ROOT / "tools/allocator_bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_rows_and_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--img-size", "32", "--rounds", "1", "--models", "test_resnet"])
    lines = capsys.readouterr().out.strip().splitlines()
    fields = [f.strip() for f in lines[-1].split("|")]
    name, default_ms, retain_ms, mallopt_ms, ratio, ratio_mallopt, faults = fields
    assert name == "test_resnet" and min(map(float, (default_ms, retain_ms, mallopt_ms))) > 0
    assert float(ratio) == pytest.approx(float(default_ms) / float(retain_ms), rel=0.03)
    assert float(ratio_mallopt) == pytest.approx(float(default_ms) / float(mallopt_ms), rel=0.03)
    assert len(faults.split("/")) == 3


def test_child_gets_only_its_tunables(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")  # the caller's: not passed on

    def fake_run(args, env, **kwargs):
        seen.append((env.get("GLIBC_TUNABLES"), "--keep-freed" in args))
        return type("Done", (), {"stdout": '{"ms": 1.0, "faults": 0}\n'})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    for setting in bench.SETTINGS:
        bench.run_child("test_resnet", 32, 1, setting)
    assert seen == [(None, False), (bench.RETAIN, False), (None, True)]
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=1"


def test_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "0"])
