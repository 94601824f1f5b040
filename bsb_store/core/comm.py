"""Communicators: serial, mpi4py, or anything shaped like bsb's MPIService.

This is the only module of bsb-store that imports mpi4py, and only when a communicator
is actually given. :func:`collective` is the one helper every collective operation goes
through: the root rank runs the function, then broadcasts the result *or the exception*,
so all ranks return the same value or raise the same error, and no rank is left waiting
in a barrier because another one failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..exceptions import CollectiveError

T = TypeVar("T")


class Comm(Protocol):
    """The few communicator operations the engine needs."""

    rank: int
    size: int

    def bcast(self, obj: Any, root: int = 0) -> Any: ...
    def barrier(self) -> None: ...
    def allgather(self, obj: Any) -> list[Any]: ...


class SerialComm:
    """A communicator of one process (no mpi4py needed)."""

    rank = 0
    size = 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        return None

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    @property
    def raw(self) -> None:
        return None


class MPIComm:
    """Wraps an mpi4py intracommunicator."""

    def __init__(self, comm: Any):
        self._comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self._comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self._comm.Barrier()

    def allgather(self, obj: Any) -> list[Any]:
        return self._comm.allgather(obj)

    @property
    def raw(self) -> Any:
        return self._comm


def make_comm(comm: Any = None) -> SerialComm | MPIComm:
    """Turn ``None``, an mpi4py communicator, a bsb ``MPIService`` or a :class:`Comm`
    into a communicator the engine can use."""
    if comm is None:
        return SerialComm()
    if isinstance(comm, (SerialComm, MPIComm)):
        return comm
    get = getattr(comm, "get_communicator", None)
    if callable(get):  # bsb.services.MPIService
        raw = get()
        return SerialComm() if raw is None else make_comm(raw)
    if hasattr(comm, "Get_rank") and hasattr(comm, "Get_size"):
        if int(comm.Get_size()) == 1:
            return SerialComm()
        return MPIComm(comm)
    raise TypeError(f"Cannot use {comm!r} as a communicator.")


class _Failure:
    """An exception travelling from the root rank to the others."""

    def __init__(self, exc: BaseException):
        self.exc = exc
        self.text = f"{type(exc).__name__}: {exc}"


def collective(comm: Comm, fn: Callable[[], T], root: int = 0) -> T:
    """Run ``fn`` on the root rank and give every rank its result or its exception.

    The exception object itself is broadcast when it pickles, so every rank raises the
    same type; otherwise a :class:`CollectiveError` carrying its text is raised.
    """
    outcome: Any = None
    if comm.rank == root:
        try:
            outcome = fn()
        except Exception as e:
            outcome = _Failure(e)
    if comm.size > 1:
        try:
            outcome = comm.bcast(outcome, root=root)
        except Exception as e:  # the exception itself would not pickle
            if comm.rank == root and isinstance(outcome, _Failure):
                comm.bcast(_Failure(CollectiveError(outcome.text)), root=root)
                raise outcome.exc from None
            raise CollectiveError(f"Broadcast of a collective result failed: {e}") from e
    if isinstance(outcome, _Failure):
        raise outcome.exc
    return outcome


def raw_comm(comm: Any) -> Any:
    """The raw mpi4py communicator behind ``comm``, or None for serial runs."""
    return getattr(make_comm(comm), "raw", None)
