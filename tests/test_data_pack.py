"""Data packs (edge_deblur/data/pack.py, edge-deblur pack): round trip, checksums, bad input."""
import hashlib
import json
import zipfile

import cv2
import numpy as np
import pytest

from edge_deblur.cli import main
from edge_deblur.data.pack import build_pack, check_matches, open_pack, read_manifest, unpack_pairs
from edge_deblur.data.pairs import read_image
from edge_deblur.errors import DatasetError


def _img(rng, h, w):
    return cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    sharp = tmp_path / "sharp"
    (sharp / "sub").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(sharp / ("sub" if i == 2 else "") / f"{i}.png"), _img(rng, 40 + 8 * i, 64))
    cv2.imwrite(str(sharp / "big.jpg"), _img(rng, 60, 200))
    pairs = tmp_path / "pairs"
    for scene in ("a", "b"):
        for sub in ("blur", "sharp"):
            (pairs / scene / sub).mkdir(parents=True)
            for f in range(3):
                cv2.imwrite(str(pairs / scene / sub / f"{f:08d}.png"), _img(rng, 24, 32))
    return tmp_path, str(sharp), str(pairs)


def test_round_trip_same_pixels_and_checksums(data, tmp_path):
    root, sharp, pairs = data
    out = tmp_path / "p" / "t.pack"
    m = build_pack(out, [sharp], [pairs], ["b"], [f"{pairs}@b"], max_side=100, quality=None, limit_mib=5)
    assert out.is_file() and not out.with_name("t.pack.tmp").exists()
    assert m["counts"] == {"sharp": 4, "pairs": 3, "val_pairs": 3}
    man = read_manifest(out)
    assert man["digest"] == m["digest"]
    # every source checksum is the file's SHA-256; every member's is its stored bytes'
    with zipfile.ZipFile(out) as zf:
        for it in man["items"]:
            src = open(f"{it['root']}/{it['source']}", "rb").read()
            assert it["source_sha256"] == hashlib.sha256(src).hexdigest()
            assert it["sha256"] == hashlib.sha256(zf.read(it["name"])).hexdigest()
    assert open_pack(out, [sharp]).pairs == []  # a recipe without pairs decodes none
    pc = open_pack(out, [sharp], [pairs], ["b"], want_val=True)
    for name, arr in zip(pc.sharp_names, pc.sharp):
        src = read_image(name)
        if src.shape[1] > 100:  # resized to the long side, area filter
            assert arr.shape == (30, 100, 3)
        else:  # lossless: the very pixels
            np.testing.assert_array_equal(arr, src)
    assert [p[0] for p in pc.pairs] == ["a"] * 3  # 'b' is held out of training ...
    for scene, frame, b, s in pc.pairs:
        np.testing.assert_array_equal(b, read_image(f"{pairs}/{scene}/blur/{frame}.png"))
        np.testing.assert_array_equal(s, read_image(f"{pairs}/{scene}/sharp/{frame}.png"))
    dirs = unpack_pairs(out, tmp_path / "val")  # ... and stored as validation pairs, lossless
    d = dirs[pairs]
    for f in range(3):
        np.testing.assert_array_equal(read_image(d / "b" / "blur" / f"{f:08d}.png"),
                                      read_image(f"{pairs}/b/blur/{f:08d}.png"))


def test_lossy_pack_decodes_close_to_the_source(data, tmp_path):
    root, sharp, pairs = data
    out = tmp_path / "l.pack"
    build_pack(out, [sharp], quality=90, max_side=1000)
    pc = open_pack(out)
    for name, arr in zip(pc.sharp_names, pc.sharp):
        src = read_image(name).astype(np.float32)
        assert arr.shape == src.shape
        assert 10 * np.log10(255.0 ** 2 / np.mean((arr - src) ** 2)) > 30


def test_size_limit_refused_and_nothing_written(data, tmp_path):
    root, sharp, pairs = data
    out = tmp_path / "big.pack"
    with pytest.raises(DatasetError, match="exceed 0.001 MiB.*--quality"):
        build_pack(out, [sharp], quality=None, limit_mib=0.001)
    assert not out.exists() and not out.with_name("big.pack.tmp").exists()


def test_pack_of_other_data_is_refused(data, tmp_path):
    root, sharp, pairs = data
    out = tmp_path / "t.pack"
    build_pack(out, [sharp], [pairs], ["b"], quality=None)
    with pytest.raises(DatasetError, match="other data than the config names.*edge-deblur pack"):
        open_pack(out, [sharp, str(root / "elsewhere")], [pairs], ["b"])
    with pytest.raises(DatasetError, match="left out scenes \\['b'\\]"):
        check_matches(read_manifest(out), out, [sharp], [pairs], [])
    # a source changed since it was packed: checksum mismatch
    p = f"{sharp}/0.png"
    img = read_image(p)
    img[0, 0] ^= 255
    cv2.imwrite(p, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    with pytest.raises(DatasetError, match="checksum mismatch.*0.png"):
        open_pack(out, [sharp], [pairs], ["b"])
    open_pack(out, [sharp], [pairs], ["b"], check_sources=False)  # on a machine without the sources


def test_corrupt_member_and_not_a_pack(data, tmp_path):
    root, sharp, pairs = data
    out = tmp_path / "t.pack"
    build_pack(out, [sharp], quality=None)
    raw = bytearray(out.read_bytes())
    with zipfile.ZipFile(out) as zf:
        info = zf.getinfo(read_manifest(out)["items"][0]["name"])
        off = info.header_offset + 30 + len(info.filename) + 20
    raw[off] ^= 0xFF
    bad = tmp_path / "bad.pack"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="fails its checksum"):
        open_pack(bad, check_sources=False)
    junk = tmp_path / "junk.pack"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a data pack"):
        read_manifest(junk)
    with pytest.raises(DatasetError, match="not found.*edge-deblur pack"):
        read_manifest(tmp_path / "missing.pack")


def test_cli_pack_and_verify(data, tmp_path, capsys):
    root, sharp, pairs = data
    out = tmp_path / "c.pack"
    assert main(["pack", "--sharp", sharp, "--val-pairs", f"{pairs}@a", "-o", str(out), "--quality", "85"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["pack", "--verify", "-o", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # was 0600: the temporary file's mode
    assert main(["pack", "--sharp", sharp, "-o", str(out), "--limit-mib", "0.0001"]) == 2
    assert "exceed" in capsys.readouterr().err
    m = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    assert m["counts"]["val_pairs"] == 3
