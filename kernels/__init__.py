"""Scan kernels shared by Vim and VMamba: selective scan, cross-scan and cross-merge."""

from kernels.cross_scan import cross_merge, cross_scan
from kernels.selective_scan import selective_scan, use_backend

__all__ = ["cross_merge", "cross_scan", "selective_scan", "use_backend"]
