"""Gaussian asset files: round trips, an independent PLY reader/writer (plyfile), bad files, fuzzing."""

import struct
import warnings

import numpy as np
import plyfile
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splatcast.engine.formats import DEFAULT_MAX_GAUSSIANS, AssetError, load_asset, save_asset
from splatcast.engine.formats import ply
from splatcast.engine.gaussians import SH_C0, GaussianCloud, random_cloud

# .splat quantisation: colour/opacity bytes are round(v * 255), rotation bytes round(q * 128 + 128)
# with 1.0 clamped to 255/256 of itself, then renormalised on reading.
SPLAT_COLOUR_TOL = 0.5 / 255 + 1e-6
SPLAT_QUAT_TOL = 1 / 128


def cloud_for(degree: int, n: int = 64, seed: int = 0) -> GaussianCloud:
    return random_cloud(n, degree, generator=torch.Generator().manual_seed(seed))


def random_raw(n: int, degree: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Arbitrary float32 raw values: unnormalised quaternions, any logits and log scales."""
    g = torch.Generator().manual_seed(seed)
    return {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g) * 3,
        "log_scales": torch.randn(n, 3, generator=g) - 4,
        "opacity_logits": torch.randn(n, generator=g) * 4,
        "sh": torch.randn(n, (degree + 1) ** 2, 3, generator=g),
    }


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.float32 and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.fixture
def good_ply(tmp_path) -> bytes:
    """A valid 4-Gaussian degree-1 PLY, the starting point of the bad-file cases."""
    save_asset(cloud_for(1, n=4), tmp_path / "good.ply")
    return (tmp_path / "good.ply").read_bytes()


# --- PLY round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_raw_values_round_trip_bit_exactly(tmp_path, degree):
    raw = random_raw(50, degree, seed=degree)
    ply.write_raw(raw, tmp_path / "a.ply")
    back = ply.read_raw(tmp_path / "a.ply")
    assert back.keys() == raw.keys()
    for name in raw:
        assert same_bits(back[name], raw[name]), name
    # And what save_asset writes is exactly the cloud's raw form.
    cloud = cloud_for(degree, seed=degree)
    save_asset(cloud, tmp_path / "b.ply")
    back = ply.read_raw(tmp_path / "b.ply")
    for name, value in cloud.to_raw().items():
        assert same_bits(back[name], value), name


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_cloud_round_trip(tmp_path, degree):
    cloud = cloud_for(degree, seed=degree)
    save_asset(cloud, tmp_path / "a.ply")
    back = load_asset(tmp_path / "a.ply")
    assert back.sh_degree == degree
    # Means and SH are stored as they are; the rest pass through log/exp, logit/sigmoid, normalise.
    assert same_bits(back.means, cloud.means) and same_bits(back.sh, cloud.sh)
    torch.testing.assert_close(back.scales, cloud.scales, rtol=1e-6, atol=0)
    torch.testing.assert_close(back.opacities, cloud.opacities, rtol=0, atol=1e-6)
    torch.testing.assert_close(back.quats, cloud.quats, rtol=0, atol=1e-6)


def test_ply_header_is_the_standard_inria_layout(tmp_path):
    save_asset(cloud_for(1, n=3), tmp_path / "a.ply")
    text = (tmp_path / "a.ply").read_bytes().split(b"end_header\n")[0].decode()
    rest = [f"property float f_rest_{i}" for i in range(9)]
    expected = [
        "ply", "format binary_little_endian 1.0", "element vertex 3",
        *(f"property float {name}" for name in ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]),
        *rest,
        *(f"property float {name}" for name in ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]),
        "",
    ]  # fmt: skip
    assert text.split("\n") == expected


@pytest.mark.parametrize("degree", [0, 3])
def test_plyfile_reads_our_ply_with_inria_channel_major_sh(tmp_path, degree):
    cloud = cloud_for(degree, n=20, seed=5)
    save_asset(cloud, tmp_path / "a.ply")
    vertex = plyfile.PlyData.read(tmp_path / "a.ply")["vertex"]
    assert vertex.count == 20
    assert [p.name for p in vertex.properties] == ply.property_names(degree)
    assert all(p.val_dtype == "f4" for p in vertex.properties)

    def column(name):
        return torch.from_numpy(np.asarray(vertex[name], dtype=np.float32))

    for c in range(3):
        assert torch.equal(column(f"f_dc_{c}"), cloud.sh[:, 0, c])
        for k in range(1, (degree + 1) ** 2):
            assert torch.equal(column(f"f_rest_{c * ((degree + 1) ** 2 - 1) + k - 1}"), cloud.sh[:, k, c])
    raw = cloud.to_raw()
    assert torch.equal(column("opacity"), raw["opacity_logits"])
    for i in range(3):
        assert torch.equal(column(f"scale_{i}"), raw["log_scales"][:, i])
        assert torch.equal(column("xyz"[i]), cloud.means[:, i])
        assert torch.equal(column(f"n{'xyz'[i]}"), torch.zeros(20))
    for i in range(4):
        assert torch.equal(column(f"rot_{i}"), cloud.quats[:, i])


@pytest.mark.parametrize("x_type, label_type", [("<f4", "<f4"), ("<f8", "u1")], ids=["all-float32", "mixed-types"])
def test_we_read_a_ply_plyfile_wrote_in_any_property_order_with_extras(tmp_path, x_type, label_type):
    """An independent writer, no normals, shuffled order, an extra property; the float32-table fast
    path and the mixed-type path must read the same values."""
    degree, n = 1, 10
    raw = random_raw(n, degree, seed=3)
    columns = {"x": raw["means"][:, 0], "y": raw["means"][:, 1], "z": raw["means"][:, 2], "opacity": raw["opacity_logits"]}
    for c in range(3):
        columns[f"f_dc_{c}"] = raw["sh"][:, 0, c]
        for k in range(1, 4):
            columns[f"f_rest_{c * 3 + k - 1}"] = raw["sh"][:, k, c]
    columns |= {f"scale_{i}": raw["log_scales"][:, i] for i in range(3)}
    columns |= {f"rot_{i}": raw["quats"][:, i] for i in range(4)}
    names = sorted(columns, reverse=True)
    dtype = [(name, x_type if name == "x" else "<f4") for name in names] + [("label", label_type)]
    data = np.empty(n, dtype)
    for name in names:
        data[name] = columns[name].numpy()
    data["label"] = 7
    plyfile.PlyData([plyfile.PlyElement.describe(data, "vertex")], byte_order="<").write(tmp_path / "a.ply")

    with pytest.warns(UserWarning, match=r"ignoring unknown PLY properties \['label'\]"):
        back = ply.read_raw(tmp_path / "a.ply")
    for name in raw:
        assert same_bits(back[name], raw[name]), name


def test_empty_cloud_round_trips_through_ply(tmp_path):
    save_asset(GaussianCloud.empty(2), tmp_path / "a.ply")
    back = load_asset(tmp_path / "a.ply")
    assert len(back) == 0 and back.sh_degree == 2


# --- .splat ---------------------------------------------------------------------------------


def quats_close_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    sign = torch.where((a * b).sum(1, keepdim=True) < 0, -1.0, 1.0)
    return (a * sign - b).abs().amax()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_splat_round_trip_within_quantisation_sorted_by_size_times_opacity(tmp_path, degree):
    cloud = cloud_for(degree, n=500, seed=degree)
    save_asset(cloud, tmp_path / "a.splat")
    assert (tmp_path / "a.splat").stat().st_size == 500 * 32
    back = load_asset(tmp_path / "a.splat")
    assert back.sh_degree == 0

    key = cloud.scales.double().prod(1) * cloud.opacities.double()
    expected = cloud.subset(torch.argsort(key, descending=True))
    assert same_bits(back.means, expected.means) and same_bits(back.scales, expected.scales)
    assert (back.opacities - expected.opacities).abs().max() <= SPLAT_COLOUR_TOL
    rgb_error = ((back.sh[:, 0] - expected.sh[:, 0]) * SH_C0).abs().max()
    assert rgb_error <= SPLAT_COLOUR_TOL
    assert quats_close_up_to_sign(back.quats, expected.quats) <= SPLAT_QUAT_TOL
    torch.testing.assert_close(back.quats.norm(dim=1), torch.ones(500))


def test_splat_record_layout_byte_for_byte(tmp_path):
    cloud = GaussianCloud(
        means=torch.tensor([[1.0, -2.0, 0.5]]),
        quats=torch.tensor([[0.5, -0.5, 0.5, 0.5]]),
        scales=torch.tensor([[0.01, 0.02, 0.03]]),
        opacities=torch.tensor([0.6]),
        sh=((torch.tensor([[[1.0, 0.25, -0.1]]]) - 0.5) / SH_C0),  # red channel clamps to 0..1
    )
    save_asset(cloud, tmp_path / "a.splat")
    expected = struct.pack("<3f3f4B4B", 1.0, -2.0, 0.5, 0.01, 0.02, 0.03, 255, 64, 0, 153, 192, 64, 192, 192)
    assert (tmp_path / "a.splat").read_bytes() == expected


# --- load_asset / save_asset --------------------------------------------------------------------


def test_load_asset_sniffs_ply_magic_for_other_extensions(tmp_path):
    cloud = cloud_for(2, n=8)
    save_asset(cloud, tmp_path / "a.PLY")
    (tmp_path / "a.PLY").rename(tmp_path / "avatar.bin")
    assert same_bits(load_asset(tmp_path / "avatar.bin").sh, cloud.sh)
    (tmp_path / "b.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(AssetError, match=r"unknown asset type '\.bin': expected \.ply or \.splat"):
        load_asset(tmp_path / "b.bin")
    with pytest.raises(AssetError, match=r"unknown asset type '\.obj'"):
        save_asset(cloud, tmp_path / "c.obj")


@pytest.mark.parametrize("suffix", [".ply", ".splat"])
def test_writers_refuse_non_finite_gaussians(tmp_path, suffix):
    cloud = cloud_for(0, n=5)
    cloud.opacities[3] = float("nan")
    with pytest.raises(AssetError, match="1 Gaussians have non-finite values"):
        save_asset(cloud, tmp_path / f"a{suffix}")


def test_splat_writer_refuses_an_empty_cloud(tmp_path):
    with pytest.raises(AssetError, match="empty file"):
        save_asset(GaussianCloud.empty(), tmp_path / "a.splat")


# --- bad files ------------------------------------------------------------------------------


def zero_first_rotation(data: bytes) -> bytes:
    offset = data.index(b"end_header\n") + len(b"end_header\n")
    stride = len(ply.property_names(1)) * 4
    record = bytearray(data[offset : offset + stride])
    record[-16:] = bytes(16)
    return data[:offset] + bytes(record) + data[offset + stride :]


BAD_PLY = {
    "empty": (lambda d: b"", "file is empty"),
    "not ply": (lambda d: b"solid mesh\n" + d, "not a PLY file"),
    "ascii": (lambda d: d.replace(b"binary_little_endian", b"ascii"), "ASCII PLY is not supported"),
    "big-endian": (lambda d: d.replace(b"binary_little_endian", b"binary_big_endian"), "big-endian PLY is not supported"),
    "missing": (
        lambda d: d.replace(b"property float opacity\n", b"").replace(b"property float rot_2\n", b""),
        r"missing required properties \['opacity', 'rot_2'\]",
    ),
    "unknown type": (lambda d: d.replace(b"float scale_1", b"half scale_1"), "property 'scale_1' has unknown type 'half'"),
    "integer type": (lambda d: d.replace(b"float opacity", b"uchar opacity"), r"must be float or double, got \['opacity \(uchar\)'\]"),
    "list": (
        lambda d: d.replace(b"end_header", b"property list uchar int indices\nend_header"),
        "list property 'indices' is not supported",
    ),
    "second element": (
        lambda d: d.replace(b"end_header", b"element face 0\nend_header"),
        "a second element 'element face 0'; only a single 'vertex' element",
    ),
    "other element": (lambda d: d.replace(b"element vertex", b"element chunk"), "only a single 'vertex' element"),
    "bad count": (lambda d: d.replace(b"element vertex 4", b"element vertex four"), "vertex count 'four' is not"),
    "odd f_rest": (lambda d: d.replace(b"property float f_rest_8\n", b""), "8 f_rest properties; expected 0, 9, 24 or 45"),
    "duplicate": (lambda d: d.replace(b"float nx", b"float x"), r"duplicate properties \['x'\]"),
    "no end_header": (lambda d: d.replace(b"end_header", b"end_heder"), "no 'end_header' line"),
    "no format": (lambda d: d.replace(b"format binary_little_endian 1.0\n", b""), "no 'format' line"),
    "format version": (lambda d: d.replace(b"1.0", b"2.0"), "unsupported PLY format line"),
    "unknown keyword": (lambda d: d.replace(b"end_header", b"vertices 4\nend_header"), "unknown keyword 'vertices'"),
    "not ascii": (lambda d: d.replace(b"property float x", b"property float \xff"), "header is not ASCII"),
    "truncated": (lambda d: d[:-5], r"truncated: the header declares 4 vertices \(416 bytes\) but 411 bytes follow"),
    "trailing": (lambda d: d + b"junk", "4 bytes of trailing data after the 4 vertices"),
    "zero quaternion": (zero_first_rotation, r"1 Gaussians have a zero-length rotation quaternion \(first: #0\)"),
}


@pytest.mark.parametrize("case", BAD_PLY)
def test_bad_ply_raises_asset_error_naming_the_problem(tmp_path, good_ply, case):
    mutate, message = BAD_PLY[case]
    path = tmp_path / "bad.ply"
    path.write_bytes(mutate(good_ply))
    with pytest.raises(AssetError, match=message) as error:
        load_asset(path)
    assert str(path) in str(error.value)


def splat_record(quat=(255, 128, 128, 128), scales=(0.1, 0.1, 0.1)) -> bytes:
    return struct.pack("<3f3f4B4B", 0, 0, 0, *scales, 10, 20, 30, 40, *quat)


BAD_SPLAT = {
    "empty": (b"", "file is empty"),
    "partial record": (splat_record() * 2 + b"\x00" * 5, r"69 bytes is not a whole number of 32-byte .splat records \(5 bytes left over\)"),
    "zero quaternion": (splat_record() + splat_record(quat=(128, 128, 128, 128)), r"1 Gaussians have a zero-length rotation quaternion \(first: #1\)"),
    "negative scale": (splat_record(scales=(0.1, -0.1, 0.1)), "1 Gaussians have negative scales"),
}


@pytest.mark.parametrize("case", BAD_SPLAT)
def test_bad_splat_raises_asset_error_naming_the_problem(tmp_path, case):
    data, message = BAD_SPLAT[case]
    path = tmp_path / "bad.splat"
    path.write_bytes(data)
    with pytest.raises(AssetError, match=message) as error:
        load_asset(path)
    assert str(path) in str(error.value)


# --- non-finite values and the size limit ---------------------------------------------------------


def test_ply_gaussians_with_nan_or_inf_are_dropped_with_a_warning(tmp_path):
    raw = random_raw(10, 1, seed=7)
    raw["means"][2, 1] = float("nan")
    raw["sh"][5, 3, 2] = float("inf")
    raw["log_scales"][8, 0] = 100.0  # finite in the file, overflows float32 when activated
    ply.write_raw(raw, tmp_path / "a.ply")
    with pytest.warns(UserWarning, match="dropped 3 of 10 Gaussians with non-finite values"):
        cloud = load_asset(tmp_path / "a.ply")
    keep = torch.tensor([i not in (2, 5, 8) for i in range(10)])
    expected = GaussianCloud.from_raw(**{name: value[keep] for name, value in raw.items()})
    assert same_bits(cloud.means, expected.means) and same_bits(cloud.sh, expected.sh)
    torch.testing.assert_close(cloud.quats, expected.quats, rtol=0, atol=1e-7)
    assert bool(cloud.finite_mask().all())


def test_splat_gaussians_with_nan_or_inf_are_dropped_with_a_warning(tmp_path):
    records = [splat_record(scales=(0.1, s, 0.1)) for s in (0.2, float("nan"), 0.3, float("inf"))]
    (tmp_path / "a.splat").write_bytes(b"".join(records))
    with pytest.warns(UserWarning, match="dropped 2 of 4 Gaussians with non-finite values"):
        cloud = load_asset(tmp_path / "a.splat")
    assert cloud.scales[:, 1].tolist() == pytest.approx([0.2, 0.3])


def test_limit_is_checked_against_the_header_before_the_payload(tmp_path, good_ply):
    assert DEFAULT_MAX_GAUSSIANS == 5_000_000
    path = tmp_path / "a.ply"
    path.write_bytes(good_ply)
    assert len(load_asset(path, max_gaussians=4)) == 4
    with pytest.raises(AssetError, match="4 Gaussians is more than the limit of 3"):
        load_asset(path, max_gaussians=3)
    # A header claiming more than the default limit, with no payload at all: refused as too many,
    # which it can only be if the count was checked before the (missing) payload was read.
    header = good_ply.split(b"end_header\n")[0].replace(b"element vertex 4", b"element vertex 5000001")
    path.write_bytes(header + b"end_header\n")
    with pytest.raises(AssetError, match="5,000,001 Gaussians is more than the limit of 5,000,000"):
        load_asset(path)
    with pytest.raises(AssetError, match="truncated"):
        load_asset(path, max_gaussians=None)


def test_splat_limit_is_checked_from_the_file_size(tmp_path):
    (tmp_path / "a.splat").write_bytes(splat_record() * 3)
    assert len(load_asset(tmp_path / "a.splat", max_gaussians=3)) == 3
    with pytest.raises(AssetError, match="3 Gaussians is more than the limit of 2"):
        load_asset(tmp_path / "a.splat", max_gaussians=2)


# --- fuzzing: corrupt files raise AssetError and nothing else ---------------------------------------

HEADER_WORDS = ["ply", "format", "ascii", "binary_big_endian", "element", "vertex", "face", "property", "list",
                "float", "double", "uchar", "int", "0", "1", "-3", "99999999999", "f_rest_3", "x", "rot_0", "end_header"]  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def load_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_asset(path)
        except AssetError:
            pass


def mutations(data: bytes, header_end: int):
    """Truncations, byte overwrites (biased to the header), insertions and header word swaps."""
    position = st.one_of(st.integers(0, max(header_end - 1, 0)), st.integers(0, len(data) - 1))

    def overwrite(edits):
        out = bytearray(data)
        for i, value in edits:
            out[i] = value
        return bytes(out)

    def swap_word(args):
        index, word = args
        words = data[:header_end].split(b" ")
        words[index % len(words)] = word.encode()
        return b" ".join(words) + data[header_end:]

    return st.one_of(
        st.integers(0, len(data) - 1).map(lambda n: data[:n]),
        st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=6).map(overwrite),
        st.tuples(position, st.binary(min_size=1, max_size=40)).map(lambda a: data[: a[0]] + a[1] + data[a[0] :]),
        st.tuples(st.integers(0, 200), st.sampled_from(HEADER_WORDS)).map(swap_word),
    )


def seed_bytes(fuzz_dir, suffix: str) -> bytes:
    path = fuzz_dir / f"seed{suffix}"
    if not path.exists():
        save_asset(cloud_for(1, n=3, seed=11), path)
    return path.read_bytes()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_corrupt_ply_raises_only_asset_error(fuzz_dir, data):
    good = seed_bytes(fuzz_dir, ".ply")
    corrupt = data.draw(mutations(good, good.index(b"end_header\n") + len(b"end_header\n")))
    path = fuzz_dir / "corrupt.ply"
    path.write_bytes(corrupt)
    load_quietly(path)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_corrupt_splat_raises_only_asset_error(fuzz_dir, data):
    good = seed_bytes(fuzz_dir, ".splat")
    corrupt = data.draw(mutations(good, 0))
    path = fuzz_dir / "corrupt.splat"
    path.write_bytes(corrupt)
    load_quietly(path)
