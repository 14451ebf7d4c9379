"""kernels/malloc.py: keep_freed really stops fresh pages (the OS's page-fault count says so),
system puts glibc's defaults back, a bad setting is one clear error; the sweep records it."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import malloc

ROOT = Path(__file__).resolve().parents[1]
GLIBC = malloc._glibc() is not None

# Allocate, touch and free a 64 MiB tensor (above any mmap threshold glibc uses by default) 16
# times; print the minor page faults (getrusage) of the last one, once per setting, in one process.
# Under keep_freed the first rounds (up to 8 seen) still fault: PyTorch allocates with
# posix_memalign, which asks glibc for a little more than the block, so a freed block of the same
# size fits only once free space has merged (in the models, the warm-up forward does this).
CHILD = """
import json, resource, sys, torch
from kernels.malloc import set_malloc

def faults_of_one_round():
    for _ in range(16):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(16 * 2**20)  # 64 MiB, touched, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

got = {}
for setting in sys.argv[1:]:
    got[setting] = (set_malloc(setting), faults_of_one_round())
print(json.dumps(got))
"""


def child_faults(*settings: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *settings], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC or platform.system() != "Linux", reason="needs glibc on Linux")
def test_keep_freed_reuses_pages_and_system_faults_them_fresh():
    pages = 64 * 2**20 // 4096
    got = child_faults("system", "keep_freed")
    (label_system, fresh), (label_kept, kept) = got["system"], got["keep_freed"]
    assert (label_system, label_kept) == ("system", "keep_freed")
    assert fresh > 0.9 * pages  # glibc's default: the 64 MiB comes back as fresh pages
    assert kept < 0.05 * pages  # kept: the freed block is reused without faults


@pytest.mark.skipif(not GLIBC or platform.system() != "Linux", reason="needs glibc on Linux")
def test_system_after_keep_freed_says_so():
    got = child_faults("keep_freed", "system")
    assert got["keep_freed"][0] == "keep_freed"
    assert got["system"][0] == "system (after keep_freed)"  # the kept heap still serves blocks


def test_bad_setting_names_what_is_allowed():
    with pytest.raises(ValueError, match="unknown malloc setting .jemalloc.; allowed: keep_freed"):
        malloc.set_malloc("jemalloc")


def test_without_glibc_nothing_is_set(monkeypatch):
    monkeypatch.setattr(malloc, "_glibc", lambda: None)
    assert malloc.set_malloc("keep_freed") == "system (not glibc)"
    malloc.release()  # no C library to call: a no-op, not an error
