"""Side-by-side benchmarks: bsb-store and bsb-hdf5 through bsb-core's ``Storage`` API,
and plain h5py holding one file open (the floor), in one run.

Run ``python -m benchmarks --help``; ``docs/performance.rst`` explains the workloads,
the targets and the latest results. Each workload is one module of this package; the
engines are pluggable backends (:mod:`benchmarks.backends`).
"""
