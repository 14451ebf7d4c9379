"""Issue 16: the first use of the CPU scan on a machine compiles it (~30 s); it says so once."""

import shutil

import pytest

from kernels.ops.selective_scan import cpu


def test_compiling_the_cpu_scan_is_one_line_and_only_the_first_time(tmp_path, monkeypatch, capsys):
    try:
        built = cpu.library()._name  # the .so this machine already has
    except RuntimeError as err:
        pytest.skip(f"no CPU scan here: {err}")
    compiles = []

    def compile_by_copying(cmd, **kwargs):  # stands in for cc: same file, no 30 s wait
        compiles.append(cmd)
        shutil.copy(built, cmd[cmd.index("-o") + 1])

    monkeypatch.setenv("KERNELS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu.subprocess, "run", compile_by_copying)
    capsys.readouterr()
    cpu._build()
    err = capsys.readouterr().err
    assert len(compiles) == 2  # compile, then link (without -ffast-math)
    assert err.count("\n") == 1 and "compiling the CPU selective scan" in err and "30 s" in err
    cpu._build()  # cached now: silent
    assert len(compiles) == 2 and capsys.readouterr().err == ""
