"""``bsb-store ls`` and what ``bsb-store info`` says per set (issue 17, item 10): labels
with counts, column types, chunk coordinates, the spatial extent, the listing with
sizes, and bsb-hdf5 networks recognised as such."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bsb_store.cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, main
from bsb_store.core import HDF5Engine, PlacementSet, maintenance
from bsb_store.core.maintenance import _info
from bsb_store.core.maintenance._ls import ls as store_ls
from bsb_store.core.resources.connectivity import ConnectivitySet
from bsb_store.core.resources.morphologies import MorphologyData
from tests.core.test_maintenance import h5, make_store

pytestmark = pytest.mark.serial_only

#: Chunk (0, 1, 0) has the packed id 65536; (0, 0, 1) 2**32.
Y1, Z1 = 65536, 2**32
P0 = np.array([[1.0, 2, 3], [4, 5, 6], [-7, 8, 9]])
P1 = np.array([[10.0, 120, 30], [11, 130, -40]])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def net(tmp_path) -> str:
    """Two placement sets, one with an additional int32 column and labels; cells in
    chunks (0, 0, 0) and (0, 1, 0); one connectivity block (0, 1, 0) -> (0, 0, 0);
    two morphologies and two files."""
    e = HDF5Engine(tmp_path / "net.h5")
    e.create()
    ps = PlacementSet.create(e, "granule")
    ps.append_data(
        (0, 0, 0),
        P0,
        morphologies=([0, 1, 0], ["GranuleA", "GranuleB"]),
        additional={"layer": np.array([1, 2, 3], dtype=np.int32)},
    )
    ps.append_data(
        (0, 1, 0),
        P1,
        morphologies=([1, 1], ["GranuleA", "GranuleB"]),
        additional={"layer": np.array([4, 5], dtype=np.int32)},
    )
    ps.label(["ascending"], [0, 1, 3])
    ps.label(["deep"], [1])
    golgi = PlacementSet.create(e, "golgi")
    golgi.append_data((0, 0, 1), [[0.5, 0.5, 100.5]])
    cs = ConnectivitySet.create(e, "granule", "golgi")
    cs.chunk_connect((0, 1, 0), (0, 0, 1), [[0, -1, -1], [1, -1, -1]], [[0, -1, -1]] * 2)
    pts = np.zeros((6, 3))
    for name in ("GranuleA", "GranuleB"):
        e.morphologies.save(name, MorphologyData(points=pts, radii=np.ones(6)))
    e.files.store("x" * 1000, id="big")
    e.files.store("hi", id="small")
    e.close()
    return e.root


# --------------------------------------------------------------------------- info
def test_info_json_has_labels_types_coordinates_and_extent(net):
    d = maintenance.info(net)
    g = d["placement"]["granule"]
    assert g["cells"] == 5 and g["chunks"] == 2
    assert g["labels"] == {"ascending": 3, "deep": 1}
    assert g["column_types"]["additional:layer"] == {"dtype": "int32", "shape": []}
    assert g["column_types"]["position"] == {"dtype": "float64", "shape": [3]}
    assert g["column_types"]["labels"]["dtype"] == "uint8"
    assert g["chunk_range"] == {"min": [0, 0, 0], "max": [0, 1, 0]}
    assert g["extent"] == {"min": [-7.0, 2.0, -40.0], "max": [11.0, 130.0, 30.0]}
    assert g["morphologies_used"] == ["GranuleA", "GranuleB"]
    golgi = d["placement"]["golgi"]
    assert golgi["labels"] == {} and golgi["chunk_range"]["min"] == [0, 0, 1]
    assert golgi["extent"] == {"min": [0.5, 0.5, 100.5], "max": [0.5, 0.5, 100.5]}
    c = d["connectivity"]["granule_to_golgi"]
    assert c["chunk_range"] == {"min": [0, 1, 0], "max": [0, 1, 0]}
    assert c["column_types"]["local_locs"] == {"dtype": "int64", "shape": [3]}
    # The keys that were there before are unchanged (backward compatible JSON).
    assert g["columns"] == ["position", "morphology", "additional:layer", "labels"]
    assert g["morphology_names"] == 2
    assert d["morphologies"]["names"] == ["GranuleA", "GranuleB"]


def test_info_reads_positions_and_labels_in_bounded_blocks(net, monkeypatch):
    """Blocks of 1 row give the same answer as one block per chunk."""
    whole = maintenance.info(net)["placement"]["granule"]
    monkeypatch.setattr(_info, "_BLOCK_ROWS", 1)
    reads: list[int] = []
    original = _info._blocks

    def spy(ds, n):
        for block in original(ds, n):
            reads.append(len(block))
            yield block

    monkeypatch.setattr(_info, "_blocks", spy)
    small = maintenance.info(net)["placement"]["granule"]
    assert small["extent"] == whole["extent"] and small["labels"] == whole["labels"]
    assert reads and set(reads) == {1}


def test_info_ignores_rows_past_the_index_count(net):
    """Rows a write never published (past index/count) are not in the extent."""
    with h5(net, "r+") as f:
        ds = f[f"placement/granule/chunks/{Y1}/position"]
        ds.resize((3, 3))
        ds[2] = [1e9, 1e9, 1e9]
    assert maintenance.info(net)["placement"]["granule"]["extent"]["max"][0] == 11.0


def test_info_text_shows_labels_coordinates_types_extent_and_names(capsys, net):
    code, out, _ = run(capsys, "info", net)
    assert code == EXIT_OK
    lines = out.splitlines()
    i = lines.index(
        "    granule: 5 cells in 2 chunks; columns: position, morphology, "
        "additional:layer, labels; 2 morphology names"
    )
    assert lines[i + 1 : i + 6] == [
        "      chunks      (0, 0, 0) .. (0, 1, 0)",
        "      extent      (-7, 2, -40) .. (11, 130, 30)",
        "      types       position float64[3], morphology int64, "
        "additional:layer int32, labels uint8",
        "      labels      ascending (3), deep (1)",
        "      morphologies GranuleA, GranuleB",
    ]
    assert "      labels      none" in lines  # golgi
    assert "      chunks      (0, 0, 1)" in lines
    assert "  morphologies  2 (12 points): GranuleA, GranuleB" in lines
    assert str(Y1) not in out  # chunk ids are printed as coordinates


def test_info_text_cuts_long_name_lists(capsys, tmp_path):
    e = HDF5Engine(tmp_path / "m.h5")
    e.create()
    for i in range(25):
        e.morphologies.save(
            f"m{i:02d}", MorphologyData(points=np.zeros((1, 3)), radii=np.ones(1))
        )
    e.close()
    code, out, _ = run(capsys, "info", e.root)
    assert code == EXIT_OK
    line = next(x for x in out.splitlines() if x.startswith("  morphologies"))
    assert line.endswith("m19, and 5 more (--json lists all)")


# ----------------------------------------------------------------------------- ls
def ls(capsys, *argv: str) -> tuple[int, list[str]]:
    code, out, err = run(capsys, "ls", *argv)
    assert err == ""
    return code, [" ".join(line.split()) for line in out.splitlines()]


def test_ls_top_level(capsys, net):
    code, lines = ls(capsys, net)
    assert code == EXIT_OK
    # granule: 5 cells x (24 position + 8 morphology + 4 layer) + 5 label bytes.
    # golgi: 1 cell x 24 bytes (positions only); the block: 2 connections x 48 bytes x 2 ways.
    assert lines == [
        "placement/ 2 placement sets, 6 cells 209 B",
        "connectivity/ 1 connectivity set, 2 connections 192 B",
        "morphologies/ 2 morphologies, 12 points 512 B",
        "files/ 2 files 1002 B",
        lines[4],
    ]
    assert lines[4].startswith("store/ engine metadata")


def test_ls_sets_and_chunks_with_coordinates(capsys, net):
    code, lines = ls(capsys, net, "placement")
    assert lines == [
        "golgi/ placement set, 1 cell in 1 chunk 24 B",
        "granule/ placement set, 5 cells in 2 chunks 185 B",
    ]
    code, lines = ls(capsys, net, "placement/granule")
    assert code == EXIT_OK
    assert lines == [
        "(0, 0, 0) chunk 0, 3 cells 111 B",
        f"(0, 1, 0) chunk {Y1}, 2 cells 74 B",
    ]
    code, lines = ls(capsys, net, "connectivity/granule_to_golgi")
    assert lines == ["(0, 1, 0) -> (0, 0, 1) block, 2 connections 192 B"]
    code, lines = ls(capsys, net, "morphologies")
    assert lines[0] == "GranuleA/ morphology, 6 points, 1 branch 256 B"
    code, lines = ls(capsys, net, "files")
    assert lines == ["big file 1000 B", "small file 2 B"]


@pytest.mark.parametrize("chunk", ["0,1,0", "(0, 1, 0)", str(Y1), f"chunks/{Y1}"])
def test_ls_a_chunk_lists_its_datasets(capsys, net, chunk):
    code, lines = ls(capsys, net, f"placement/granule/{chunk}")
    assert code == EXIT_OK
    names = [line.split()[0] for line in lines]
    assert names == ["additional:layer", "morphology", "position"]
    assert lines[0].startswith("additional:layer dataset int32, 2 ")
    assert lines[2].startswith("position dataset float64, 2 x 3 ")


def test_ls_recursive_and_json(capsys, net):
    code, lines = ls(capsys, net, "-r")
    assert code == EXIT_OK
    assert "granule/ placement set, 5 cells in 2 chunks 185 B" in lines
    assert f"(0, 1, 0) chunk {Y1}, 2 cells 74 B" in lines
    assert "(0, 1, 0) -> (0, 0, 1) block, 2 connections 192 B" in lines
    assert any(x.startswith("points dataset {position: float64[3]") for x in lines)
    code, out, _ = run(capsys, "ls", net, "placement/granule", "--json")
    d = json.loads(out)
    assert d["kind"] == "placement set" and d["damaged"] == []
    assert [(e["coords"], e["id"], e["cells"], e["bytes"]) for e in d["entries"]] == [
        ([0, 0, 0], 0, 3, 111),
        ([0, 1, 0], Y1, 2, 74),
    ]
    data = store_ls(net, recursive=True)
    place = data["entries"][0]
    assert [s["name"] for s in place["entries"]] == ["golgi", "granule"]
    assert len(place["entries"][1]["entries"]) == 2


def test_ls_missing_path_exits_2(capsys, net):
    code, out, err = run(capsys, "ls", net, "placement/purkinje")
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("bsb-store ls: error: No 'placement/purkinje' in the store")
    code, out, _ = run(capsys, "ls", net, "nope", "--json")
    assert code == EXIT_USAGE and json.loads(out)["exit_code"] == EXIT_USAGE


def test_ls_reports_damage_with_exit_1(capsys, net):
    with h5(net, "r+") as f:
        del f["placement/granule/index/count"]
    code, out, _ = run(capsys, "ls", net, "placement/granule")
    assert code == EXIT_PROBLEMS
    assert "damaged: /placement/granule/index" in out


def test_ls_does_not_read_data(net, monkeypatch):
    """The listing reads index and registry only: no column dataset is read."""
    read = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        read.append(self.name)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    store_ls(net, recursive=True)
    assert read and not [n for n in read if "/chunks/" in n or "/out/" in n]


def test_ls_broken_pipe_exits_141_quietly(net):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    p = subprocess.run(
        f"{sys.executable} -m bsb_store ls -r '{net}' | head -1; "
        'echo "rc=${PIPESTATUS[0]}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert p.stdout.splitlines()[-1] in ("rc=141", "rc=0")  # 0: all fit the pipe
    assert p.stderr == ""


# ---------------------------------------------------------------- bsb-hdf5 files
def _fake_bsb_hdf5(path: Path, attrs: dict) -> str:
    with h5py.File(path, "w") as f:
        for g in ("placement", "connectivity", "morphologies", "files"):
            f.create_group(g)
        f.attrs.update(attrs)
    return str(path)


@pytest.mark.parametrize(
    ("attrs", "said"),
    [
        ({"bsb_hdf5_version": "8.0.2", "bsb_version": "8.0.2"}, "(bsb-hdf5 8.0.2)"),
        ({"chunk_size": [1.0, 1, 1]}, "(bsb-hdf5, version unknown)"),
    ],
)
def test_a_bsb_hdf5_network_is_named(capsys, tmp_path, attrs, said):
    path = _fake_bsb_hdf5(tmp_path / "net.h5", attrs)
    for command in ("info", "ls"):
        code, out, err = run(capsys, command, path)
        assert code == EXIT_USAGE and out == ""
        assert f"is a bsb-hdf5 network {said}, not a bsb-store root" in err
        assert "no import command yet" in err
    code, out, _ = run(capsys, "info", path, "--json")
    assert "bsb-hdf5 network" in json.loads(out)["error"]


def test_a_plain_hdf5_file_is_still_not_a_store(capsys, tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_group("placement")
    code, _, err = run(capsys, "ls", str(path))
    assert code == EXIT_USAGE and "is not a bsb-store file" in err
    assert "bsb-hdf5" not in err


def test_a_real_bsb_hdf5_file_is_recognised(capsys, tmp_path):
    """The layout bsb-hdf5 itself writes (``Storage("hdf5", path)``)."""
    pytest.importorskip("bsb_hdf5")
    from bsb import Storage

    path = str(tmp_path / "net.h5")
    Storage("hdf5", path).create()
    code, _, err = run(capsys, "info", path)
    assert code == EXIT_USAGE and "is a bsb-hdf5 network (bsb-hdf5 " in err
    assert _info.bsb_hdf5_version(path).startswith("bsb-hdf5 ")
    assert _info.bsb_hdf5_version(make_store(tmp_path / "s.h5")) is None


def test_negative_chunk_coordinates(capsys, tmp_path):
    e = HDF5Engine(tmp_path / "neg.h5")
    e.create()
    ps = PlacementSet.create(e, "a")
    ps.append_data((-1, 0, 2), [[-5.0, 1, 250]])
    ps.append_data((3, -2, 0), [[350.0, -150, 5]])
    e.close()
    d = maintenance.info(e.root)["placement"]["a"]
    assert d["chunk_range"] == {"min": [-1, -2, 0], "max": [3, 0, 2]}
    assert d["extent"] == {"min": [-5.0, -150.0, 5.0], "max": [350.0, 1.0, 250.0]}
    code, lines = ls(capsys, e.root, "placement/a")
    assert [line.split(" chunk ")[0] for line in lines] == ["(-1, 0, 2)", "(3, -2, 0)"]
    code, lines = ls(capsys, e.root, "placement/a/-1,0,2")
    assert code == EXIT_OK and lines[0].startswith("position dataset float64, 1 x 3")


def test_labels_of_rows_past_the_index_count_are_not_counted(net):
    """A chunk whose index count shrank (cleared, rewritten) counts only its rows."""
    with h5(net, "r+") as f:
        f["placement/granule/index/count"][0] = 1  # chunk (0, 0, 0): cell 0 only
    d = maintenance.info(net)["placement"]["granule"]
    assert d["cells"] == 3
    assert d["labels"] == {"ascending": 2}  # cell 1 (ascending, deep) is gone
    assert d["extent"] == {"min": [1.0, 2.0, -40.0], "max": [11.0, 130.0, 30.0]}
