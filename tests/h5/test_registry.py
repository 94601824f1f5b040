"""The written_by/type registries: registration, aliases, lookups, no importlib."""

from __future__ import annotations

import sys

import h5py
import pytest

from bsb_store.exceptions import FormatError, InvalidInputError, UnknownFormatError
from bsb_store.h5 import (
    H5File,
    HasTraits,
    determine_type,
    h5_class_from_file,
    register,
    registry,
)
from bsb_store.h5.registry import Registry, default_name

from .formats import Tiny, TinyH5, Volume, VolumeH5, VolumeSubH5, make_volume


def test_format_classes_register_on_definition():
    assert VolumeH5.registered_name == default_name(VolumeH5)
    assert VolumeH5.registered_name.endswith("formats.VolumeH5")
    assert registry.lookup(VolumeH5.registered_name) is VolumeH5
    assert registry.lookup(VolumeSubH5.registered_name) is VolumeSubH5
    assert registry.lookup("bsb_store.h5.file.H5File") is H5File
    assert TinyH5.registered_name == "rtmod.TinyH5"
    assert registry.lookup("rtmod.TinyH5") is TinyH5


def test_name_and_aliases_keywords():
    class Named(H5File, name="tests.h5.NamedH5", aliases=("legacy.pkg.NamedH5",)):
        pass

    assert registry.lookup("tests.h5.NamedH5") is Named
    assert registry.lookup("legacy.pkg.NamedH5") is Named
    assert sorted(registry.formats.names_of(Named)) == [
        "legacy.pkg.NamedH5",
        "tests.h5.NamedH5",
    ]


def test_explicit_register_alias_and_conflicts():
    register("some.tool.VolumeWriter", VolumeH5)
    assert registry.lookup("some.tool.VolumeWriter") is VolumeH5
    with pytest.raises(InvalidInputError, match="already registered"):
        register("some.tool.VolumeWriter", VolumeSubH5)
    assert registry.lookup("some.tool.VolumeWriter") is VolumeH5
    register("some.tool.VolumeWriter", VolumeSubH5, replace=True)
    assert registry.lookup("some.tool.VolumeWriter") is VolumeSubH5
    registry.formats.unregister("some.tool.VolumeWriter")
    assert "some.tool.VolumeWriter" not in registry.formats
    with pytest.raises(InvalidInputError):
        register("", VolumeH5)


def test_redefinition_replaces_silently():
    def define():
        class Again(H5File):
            pass

        return Again

    first, second = define(), define()
    assert first is not second
    assert registry.lookup(second.registered_name) is second


def test_unknown_name():
    reg = Registry("format")
    with pytest.raises(UnknownFormatError, match="No format class is registered"):
        reg.get("nope.Nope")
    assert len(reg) == 0
    reg.register("a.B", VolumeH5)
    assert list(reg) == ["a.B"] and len(reg) == 1


def test_h5_class_from_file_returns_a_class(h5path):
    VolumeH5(h5path).store(make_volume())
    cls = h5_class_from_file(h5path)
    assert cls is VolumeH5
    assert isinstance(cls, type)  # TVB returns an *instance* here (reference §4.7)


def test_from_file_returns_instance_of_written_by_class(h5path):
    VolumeSubH5(h5path).store(make_volume())
    f = H5File.from_file(h5path)
    assert type(f) is VolumeSubH5
    assert f.mode == "r"
    assert f.count.load() == 4
    assert type(VolumeH5.from_file(h5path)) is VolumeSubH5
    with pytest.raises(FormatError, match="not a TinyH5"):
        TinyH5.from_file(h5path)


def test_missing_written_by(h5path, unchanged):
    with h5py.File(h5path, "w") as f:
        f.attrs["origin"] = 1
    check = unchanged(h5path)
    with pytest.raises(UnknownFormatError, match="no written_by header"):
        h5_class_from_file(h5path)
    with pytest.raises(UnknownFormatError):
        H5File.from_file(h5path)
    assert h5_class_from_file(h5path, default=VolumeH5) is VolumeH5
    assert type(H5File.from_file(h5path, default=VolumeH5)) is VolumeH5
    check()


def test_unknown_written_by_is_never_imported(h5path, unchanged):
    # ``this`` is an importable stdlib module; a registry miss must not import it.
    assert "this" not in sys.modules
    with h5py.File(h5path, "w") as f:
        f.attrs["written_by"] = "this.ZenH5"
        f.attrs["type"] = "this.Zen"
    check = unchanged(h5path)
    with pytest.raises(UnknownFormatError, match=r"'this\.ZenH5'.*not a registered"):
        h5_class_from_file(h5path)
    with pytest.raises(
        UnknownFormatError, match=r"'this\.Zen'.*not a registered datatype"
    ):
        determine_type(h5path)
    assert "this" not in sys.modules
    check()


def test_determine_type(h5path, tmp_path):
    VolumeH5(h5path).store(make_volume())
    assert determine_type(h5path) is Volume
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w"):
        pass
    assert determine_type(bare) is HasTraits
    tiny = tmp_path / "tiny.h5"
    TinyH5(tiny).store(Tiny(data=[1.0], count=1))  # the TVB profile does not write type
    assert determine_type(tiny) is HasTraits
