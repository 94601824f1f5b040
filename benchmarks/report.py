"""The printed tables, the target checks and the JSON document of one run.

Targets (``DESIGN.md``, "Targets") are evaluated and printed as met / NOT met; they are
never asserted: timings depend on the machine, and the smoke size is too small for
them to mean anything.
"""

from __future__ import annotations

import math
from typing import Any

from .common import Context

#: Target thresholds.
WITHIN_FLOOR = 1.5  # every workload: store / floor
MPI_SPEEDUP = 1.6  # two ranks against one, same work
FLAT = 1.25  # per-append cost, last 10% / first 10% (medians)
FILE_RATIO = 1.2  # file bytes / bytes stored
MEMORY_MARGINAL = 0.1  # extra peak RSS per extra byte iterated (set vs quarter set)
MEMORY_MIN_SET = 64 * 2**20  # below this the memory check is not meaningful


def _fmt_s(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v >= 100:
        return f"{v:.0f} s"
    if v >= 1:
        return f"{v:.2f} s"
    if v >= 1e-3:
        return f"{v * 1e3:.1f} ms"
    return f"{v * 1e6:.0f} µs"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _fmt_r(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def store_column(ctx: Context) -> str | None:
    for name in ("store", "store-core"):
        if name in ctx.backends:
            return name
    return None


def table(ctx: Context, rst: bool = False) -> str:
    """The main table: workload | floor | store | hdf5 | store/floor | hdf5/store."""
    engines = [n for n in ("floor", "store", "store-core", "hdf5") if n in ctx.backends]
    store = store_column(ctx)
    header = [
        "workload",
        *engines,
        f"{store or 'store'}/floor",
        f"hdf5/{store or 'store'}",
    ]
    lines = []
    for row in ctx.rows:
        sec = row.seconds
        lines.append(
            [
                row.workload,
                *(_fmt_s(sec.get(e)) for e in engines),
                _fmt_r(_ratio(sec.get(store), sec.get("floor"))),
                _fmt_r(_ratio(sec.get("hdf5"), sec.get(store))),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    if rst:
        rule = "  ".join("=" * w for w in widths)
        out = [rule, _line(header, widths), rule]
        out += [_line(r, widths) for r in lines]
        out.append(rule)
        return "\n".join(out)
    out = [_line(header, widths, " | "), "-+-".join("-" * w for w in widths)]
    out += [_line(r, widths, " | ") for r in lines]
    return "\n".join(out)


def _line(cells: list[str], widths: list[int], sep: str = "  ") -> str:
    return sep.join(
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()


def details(ctx: Context) -> str:
    """Secondary numbers: flatness, file sizes, MPI speed-ups, memory."""
    m = ctx.metrics
    out = []
    for wl in ("place", "connect"):
        if wl not in m:
            continue
        out.append(f"{wl}: per-append cost (median ms, first 10% -> last 10%) and file")
        for name, v in m[wl].items():
            fl = v["flatness"]
            extra = ""
            if "file_ratio_per_direction" in v:
                extra = (
                    f", {v['file_ratio_per_direction']:.2f}x of the bytes held "
                    f"({v['directions']} direction{'s' if v['directions'] > 1 else ''})"
                )
            out.append(
                f"  {name:<10} {fl['first_ms']:8.3f} -> {fl['last_ms']:8.3f} ms "
                f"({fl['ratio']:.2f}x)   file {v['file_bytes'] / 2**20:9.1f} MiB = "
                f"{v['file_ratio']:.2f}x of {v['payload_bytes'] / 2**20:.1f} MiB payload"
                f"{extra}"
            )
    mpi = m.get("mpi_append", {})
    if mpi and "skipped" not in mpi:
        out.append(
            "mpiexec: throughput of 2 ranks / 1 rank, same work (incl. merge); "
            "machine ceiling = a CPU-bound loop split the same way"
        )
        for name, v in mpi.items():
            out.append(
                f"  {name:<10} place {v['place_speedup']:.2f}x "
                f"({v['place_speedup_merged']:.2f}x)   connect "
                f"{v['connect_speedup']:.2f}x ({v['connect_speedup_merged']:.2f}x)   "
                f"machine ceiling {v['cpu_speedup']:.2f}x"
            )
    mem = m.get("iter_memory")
    if mem:
        out.append(
            "iterating all connections: peak RSS growth (traced Python/numpy peak), "
            "set and quarter set"
        )
        for name, v in mem.items():
            q = v.get("small_set", {})
            out.append(
                f"  {name:<10} {v['rss_growth'] / 2**20:8.1f} MiB "
                f"({v['traced_peak'] / 2**20:.1f} MiB) for "
                f"{v['bytes_iterated'] / 2**20:.1f} MiB;  "
                f"{q.get('rss_growth', 0) / 2**20:.1f} MiB for "
                f"{q.get('bytes_iterated', 0) / 2**20:.1f} MiB;  "
                f"marginal {v.get('marginal', float('nan')):.3f} B/B"
            )
    return "\n".join(out)


def targets(ctx: Context) -> list[dict[str, Any]]:
    """Each target with the measured numbers, for bsb-store (and the others)."""
    store = store_column(ctx)
    out: list[dict[str, Any]] = []
    if store is None:
        return out

    def add(name: str, met: bool | None, value: str) -> None:
        out.append({"target": name, "met": met, "value": value})

    if "floor" in ctx.backends:
        worst = []
        for row in ctx.rows:
            r = _ratio(row.seconds.get(store), row.seconds.get("floor"))
            if r is not None:
                worst.append((r, row.workload))
        bad = sorted((x for x in worst if x[0] > WITHIN_FLOOR), reverse=True)
        add(
            f"every workload within {WITHIN_FLOOR}x of the floor",
            not bad if worst else None,
            (
                f"{len(worst) - len(bad)}/{len(worst)} within; over: "
                + "; ".join(f"{w} {r:.2f}x" for r, w in bad)
                if bad
                else f"{len(worst)}/{len(worst)} within (worst {max(worst)[0]:.2f}x)"
            )
            if worst
            else "no rows",
        )
    mpi = ctx.metrics.get("mpi_append", {}).get(store)
    if mpi:
        p, c = mpi["place_speedup"], mpi["connect_speedup"]
        add(
            f"2 ranks append >= {MPI_SPEEDUP}x faster than 1",
            min(p, c) >= MPI_SPEEDUP,
            f"place {p:.2f}x, connect {c:.2f}x (this machine's ceiling for two "
            f"CPU-bound processes: {mpi['cpu_speedup']:.2f}x)",
        )
    flats = [
        (wl, ctx.metrics[wl][store]["flatness"]["ratio"])
        for wl in ("place", "connect")
        if store in ctx.metrics.get(wl, {})
    ]
    if flats:
        add(
            f"append cost flat (last/first 10% <= {FLAT})",
            all(r <= FLAT for _, r in flats),
            ", ".join(f"{wl} {r:.2f}x" for wl, r in flats),
        )
    files = []
    if store in ctx.metrics.get("place", {}):
        files.append(("positions", ctx.metrics["place"][store]["file_ratio"]))
    if store in ctx.metrics.get("connect", {}):
        v = ctx.metrics["connect"][store]
        files.append(("connections (per direction held)", v["file_ratio_per_direction"]))
    if files:
        add(
            f"file size <= {FILE_RATIO}x the bytes stored",
            all(r <= FILE_RATIO for _, r in files),
            ", ".join(f"{w} {r:.2f}x" for w, r in files)
            + (
                f"; connections against the API payload "
                f"{ctx.metrics['connect'][store]['file_ratio']:.2f}x"
                if store in ctx.metrics.get("connect", {})
                else ""
            ),
        )
    mem = ctx.metrics.get("iter_memory", {}).get(store)
    if mem:
        meaningful = mem["bytes_iterated"] >= MEMORY_MIN_SET
        small = mem.get("small_set", {})
        add(
            "bounded memory when iterating (growth independent of the set size)",
            mem["marginal"] <= MEMORY_MARGINAL if meaningful else None,
            f"peak RSS +{mem['rss_growth'] / 2**20:.1f} MiB for "
            f"{mem['bytes_iterated'] / 2**20:.1f} MiB iterated, "
            f"+{small.get('rss_growth', 0) / 2**20:.1f} MiB for a quarter of it "
            f"(marginal {mem['marginal']:.3f} B per B)"
            + ("" if meaningful else " (set too small to judge)"),
        )
    return out


def format_targets(items: list[dict[str, Any]]) -> str:
    marks = {True: "met    ", False: "NOT met", None: "n/a    "}
    return "\n".join(f"  [{marks[t['met']]}] {t['target']}: {t['value']}" for t in items)


def document(ctx: Context, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "rows": [
            {
                "workload": r.workload,
                "seconds": r.seconds,
                "ratios": {
                    "store/floor": _ratio(
                        r.seconds.get(store_column(ctx) or "store"),
                        r.seconds.get("floor"),
                    ),
                    "hdf5/store": _ratio(
                        r.seconds.get("hdf5"), r.seconds.get(store_column(ctx) or "store")
                    ),
                },
            }
            for r in ctx.rows
        ],
        "metrics": ctx.metrics,
        "targets": targets(ctx),
    }
