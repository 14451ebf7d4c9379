"""Scan kernels shared by Vim and VMamba: selective scan, cross-scan and cross-merge."""

from kernels.ops.cross_scan import cross_merge, cross_scan
from kernels.ops.selective_scan import selective_scan, use_backend

__all__ = ["cross_merge", "cross_scan", "selective_scan", "use_backend"]
