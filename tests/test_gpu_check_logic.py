"""kernels.gpu_check's bookkeeping, on a CPU: a skipped check is reported and fails the run."""

import os

import pytest


@pytest.fixture(scope="module")
def gpu_check():
    saved = os.environ.get("TRITON_INTERPRET")
    from kernels import gpu_check  # it removes TRITON_INTERPRET; put it back for the others

    if saved is not None:
        os.environ["TRITON_INTERPRET"] = saved
    return gpu_check


def test_a_skipped_check_is_reported_and_fails_unless_allowed(gpu_check, capsys):
    def passes():
        return "fine"

    def skips():
        raise gpu_check.Skip("no mamba_ssm")

    rows = gpu_check.run_checks([passes, skips])
    assert [r[1] for r in rows] == ["PASS", "SKIP"]
    assert gpu_check.exit_code(rows, allow_skips=False) == 1
    assert gpu_check.exit_code(rows, allow_skips=True) == 0
    table = "\n".join(gpu_check.summary(rows))
    assert "skips" in table and "SKIP" in table and "1 pass, 0 fail, 1 skip" in table


def test_a_failed_check_fails_even_with_skips_allowed(gpu_check):
    def fails():
        raise AssertionError("off by one")

    rows = gpu_check.run_checks([fails])
    assert rows[0][1] == "FAIL" and "off by one" in rows[0][3]
    assert gpu_check.exit_code(rows, allow_skips=True) == 1
