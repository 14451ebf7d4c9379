"""The kernels behind kernels.selective_scan, cross_scan and cross_merge: a package each
(backends, custom op, references), apart from the public functions of the same names."""
