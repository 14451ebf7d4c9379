"""tools/allocator_bench.py: each setting runs in its own interpreter with its GLIBC_TUNABLES,
and the printed ratio is default ms / retain ms. The timings are not checked (a benchmark)."""

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
    name, default_ms, retain_ms, ratio, faults = (f.strip() for f in lines[-1].split("|"))
    assert name == "test_resnet" and float(default_ms) > 0 and float(retain_ms) > 0
    assert float(ratio) == pytest.approx(float(default_ms) / float(retain_ms), rel=0.03)
    assert len(faults.split("/")) == 2


def test_child_gets_only_its_tunables(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")  # the caller's: not passed on

    def fake_run(args, env, **kwargs):
        seen.append(env.get("GLIBC_TUNABLES"))
        return type("Done", (), {"stdout": '{"ms": 1.0, "faults": 0}\n'})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    for tunables in bench.SETTINGS.values():
        bench.run_child("test_resnet", 32, 1, tunables)
    assert seen == [None, bench.RETAIN]
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=1"


def test_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "0"])
