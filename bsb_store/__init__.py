"""bsb-store: fast, crash-safe HDF5 storage for chunked scaffold network models."""

__version__ = "0.1.0"
