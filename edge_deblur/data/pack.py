"""Data packs: the sharp photos and real pairs a training recipe names, in one file that travels.

A pack is an uncompressed ZIP archive (the members are already compressed images) holding
``manifest.json`` and one encoded image per member:

* sharp photos (``data.sharp_roots``): resized so the long side is at most ``max_side`` and
  re-encoded as WebP at ``quality`` (lossy; sharp photos are many and large);
* real blur/sharp pairs (``data.pair_roots`` minus ``data.pair_exclude``, and any validation
  pairs): lossless (lossless WebP, or the source's PNG bytes when those are smaller), since
  their blur is the signal.

The manifest records, per member, its source (root as the recipe writes it, path under the
root), the SHA-256 of the source file and of the stored bytes, and the decoded shape; per pack,
the roots, the exclusions, the encoding and one digest over all sources. ``open_pack`` checks
the stored bytes against the manifest and the pack's roots against the recipe's, so a pack made
from other data than the config names is refused with a message that says how to rebuild it.
numpy + OpenCV only (no torch): the tensors are made by ``device_data``.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from ..errors import DatasetError
from .pairs import find_pairs, list_images, read_image

__all__ = ["PACK_FORMAT", "PackContents", "build_pack", "open_pack", "read_manifest", "check_matches", "unpack_pairs"]

PACK_FORMAT = 1


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rgb_u8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    return img


def _encode(img_rgb: np.ndarray, quality: Optional[int]) -> bytes:
    """WebP bytes of an RGB uint8 image: lossy at ``quality`` or lossless (``None``)."""
    q = 101 if quality is None else int(quality)  # OpenCV: WebP quality > 100 is lossless
    ok, buf = cv2.imencode(".webp", cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always has WebP
        raise DatasetError("WebP encoding failed; check that OpenCV was built with WebP")
    return buf.tobytes()


def _decode(data: bytes, name: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"pack member {name!r} does not decode as an image; rebuild the pack with edge-deblur pack")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _sharp_member(path: Path, max_side: int, quality: int):
    raw = path.read_bytes()
    img = _rgb_u8(read_image(path))
    h, w = img.shape[:2]
    if max(h, w) > max_side:
        r = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)
    return _sha(raw), _encode(img, quality), list(img.shape)


def _pair_member(path: Path):
    """Lossless bytes of a pair frame: lossless WebP, or the file's own PNG bytes when smaller."""
    raw = path.read_bytes()
    img = _rgb_u8(read_image(path))
    data, ext = _encode(img, None), ".webp"
    if path.suffix.lower() == ".png" and len(raw) <= len(data):
        probe = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if probe is not None and probe.dtype == np.uint8 and probe.ndim == 3 and probe.shape[2] == 3:
            data, ext = raw, ".png"
    return _sha(raw), data, list(img.shape), ext


def _digest(items: Iterable[dict]) -> str:
    h = hashlib.sha256()
    for it in sorted(items, key=lambda i: (i["root"], i["source"])):
        h.update(f"{it['root']}\0{it['source']}\0{it['source_sha256']}\n".encode())
    return h.hexdigest()


def _check_output(out, roots: Sequence[str]) -> None:
    """Refuse an output path that is a folder, one of the source files, or inside a source root
    (the pack would replace a photo, or be read back as one by the next pack or training run)."""
    out = Path(out)
    if out.is_dir():
        raise DatasetError(f"output {str(out)!r} is a folder; pass a pack file path, e.g. "
                           f"--out {str(out / 'train.pack')!r}")
    target = out.resolve()
    for root in roots:
        rp = Path(root).resolve()
        if target == rp or rp in target.parents:
            raise DatasetError(
                f"output {str(out)!r} is inside the source folder {str(root)!r}: the pack would overwrite or be mixed "
                f"with the photos it packs; write it elsewhere, e.g. --out data_cache/{out.stem or 'train'}.pack")


def build_pack(out: str | os.PathLike, sharp_roots: Sequence[str] = (), pair_roots: Sequence[str] = (),
               pair_exclude: Sequence[str] = (), val_pairs: Sequence[str] = (), max_side: int = 1024,
               quality: Optional[int] = 90, limit_mib: float = 40.0, workers: int = 0, log=None) -> dict:
    """Write a pack to ``out`` (atomically) and return its manifest.

    ``sharp_roots``/``pair_roots``/``pair_exclude``: as in ``DataConfig`` (roots are recorded as
    written, so a recipe's relative paths match). ``val_pairs``: ``ROOT`` or ``ROOT@scene,scene``
    validation pair sets, stored lossless. Raises ``DatasetError`` when a root is missing or
    empty, when the pack would exceed ``limit_mib`` (nothing is written), or when nothing is given.
    ``quality=None`` stores the sharp photos lossless too.
    """
    from .datasets import _select  # scene selection with typo checks (imports torch's Dataset)

    if not sharp_roots and not pair_roots and not val_pairs:
        raise DatasetError("nothing to pack: give sharp roots, pair roots or validation pairs (e.g. --config)")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise DatasetError(f"quality must be in 1..100, got {quality}")
    if int(max_side) < 16:
        raise DatasetError(f"max_side must be >= 16 px, got {max_side}")
    val_roots = [str(spec).partition("@")[0] for spec in val_pairs]
    _check_output(out, [*sharp_roots, *pair_roots, *val_roots])
    workers = workers or min(8, os.cpu_count() or 1)
    items: list[dict] = []
    pairs: list[dict] = []
    jobs = []
    for root in sharp_roots:
        rp = Path(root)
        for p in list_images(rp):  # raises DatasetError for a missing or empty root
            jobs.append(("sharp", str(root), p, p.relative_to(rp).as_posix()))
    pair_sets = [("train", str(r), None, list(pair_exclude)) for r in pair_roots]
    for spec in val_pairs:
        root, _, scenes = str(spec).partition("@")
        pair_sets.append(("val", root, [s for s in scenes.split(",") if s] or None, []))
    for group, root, include, exclude in pair_sets:
        rp = Path(root)
        found = _select(find_pairs(rp), include, exclude if group == "train" else [], [root])
        for scene, bp, sp in found:
            pairs.append({"group": group, "root": root, "scene": scene, "frame": bp.stem,
                          "blur": bp.relative_to(rp).as_posix(), "sharp": sp.relative_to(rp).as_posix()})
            jobs.append(("pair", root, bp, bp.relative_to(rp).as_posix()))
            jobs.append(("pair", root, sp, sp.relative_to(rp).as_posix()))

    def work(job):
        kind, root, path, rel = job
        if kind == "sharp":
            src_sha, data, shape = _sharp_member(path, max_side, quality)
            ext = ".webp"
        else:
            src_sha, data, shape, ext = _pair_member(path)
        return {"root": root, "source": rel, "source_sha256": src_sha, "sha256": _sha(data), "shape": shape,
                "kind": kind, "ext": ext}, data

    t0 = time.time()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    limit = float(limit_mib) * 2**20
    total = 0
    names: dict[tuple[str, str], str] = {}
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf, \
                cf.ThreadPoolExecutor(workers) as ex:
            for i, (meta, data) in enumerate(ex.map(work, jobs)):
                name = f"{meta['kind']}/{i:06d}{meta.pop('ext')}"
                meta["name"] = name
                total += len(data)
                if total > limit:
                    raise DatasetError(
                        f"the pack would exceed {limit_mib:g} MiB (over {total / 2**20:.1f} MiB after {i + 1} of "
                        f"{len(jobs)} images); lower --quality (now {quality}) or --max-side (now {max_side}), pack "
                        "fewer roots, or raise --limit-mib if the device's 64 MiB tree limit still holds")
                zf.writestr(name, data)
                names[(meta["root"], meta["source"])] = name
                items.append(meta)
                if log and (i + 1) % 100 == 0:
                    log(f"packed {i + 1}/{len(jobs)} images, {total / 2**20:.1f} MiB")
            for p in pairs:
                p["blur"] = names[(p["root"], p["blur"])]
                p["sharp"] = names[(p["root"], p["sharp"])]
            manifest = {
                "format": PACK_FORMAT,
                "kind": "edge_deblur data pack",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sharp_roots": [str(r) for r in sharp_roots],
                "pair_roots": [str(r) for r in pair_roots],
                "pair_exclude": [str(s) for s in pair_exclude],
                "val_pairs": [str(s) for s in val_pairs],
                "encoding": {"sharp": f"webp {'lossless' if quality is None else f'q{int(quality)}'}, "
                                      f"long side <= {int(max_side)} px (INTER_AREA)",
                             "pairs": "lossless (lossless WebP, or the PNG bytes when smaller)"},
                "counts": {"sharp": sum(1 for i in items if i["kind"] == "sharp"),
                           "pairs": sum(1 for p in pairs if p["group"] == "train"),
                           "val_pairs": sum(1 for p in pairs if p["group"] == "val")},
                "digest": _digest(items),
                "items": items,
                "pairs": pairs,
            }
            zf.writestr("manifest.json", json.dumps(manifest, indent=1))
        size = tmp.stat().st_size
        if size > limit:
            raise DatasetError(f"the pack is {size / 2**20:.1f} MiB, over the {limit_mib:g} MiB limit; lower --quality "
                               f"(now {quality}) or --max-side (now {max_side}), or pack fewer roots")
        from ..runtime.manifest import _UMASK

        os.chmod(tmp, 0o666 & ~_UMASK)  # a temporary file is 0600; the pack gets the usual mode
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    manifest["bytes"] = out.stat().st_size
    manifest["seconds"] = round(time.time() - t0, 1)
    return manifest


def read_manifest(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"data pack {str(p)!r} not found; make it with: edge-deblur pack --config <recipe> --out {p}")
    try:
        with zipfile.ZipFile(p) as zf:
            m = json.loads(zf.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise DatasetError(f"{str(p)!r} is not a data pack ({e}); rebuild it with edge-deblur pack") from e
    if m.get("kind") != "edge_deblur data pack" or m.get("format") != PACK_FORMAT:
        raise DatasetError(f"{str(p)!r} is not a format-{PACK_FORMAT} data pack; rebuild it with edge-deblur pack")
    return m


def check_matches(manifest: dict, path, sharp_roots: Sequence[str] = (), pair_roots: Sequence[str] = (),
                  pair_exclude: Sequence[str] = ()) -> None:
    """Raise ``DatasetError`` unless the pack holds what the recipe names: every sharp root and
    pair root of the recipe, and no fewer pair scenes than it trains on (a pack may hold more:
    ``open_pack`` keeps only the recipe's roots and drops the scenes it holds out)."""
    problems = []
    for label, want, have in (("sharp_roots", sharp_roots, manifest["sharp_roots"]),
                              ("pair_roots", pair_roots, manifest["pair_roots"])):
        missing = [str(r) for r in want if str(r) not in have]
        if missing:
            problems.append(f"{label} {missing} not in the pack (it holds {have})")
    if pair_roots:
        lost = sorted(set(manifest["pair_exclude"]) - set(map(str, pair_exclude)))
        if lost:
            problems.append(f"the pack left out scenes {lost} that the config trains on")
    if problems:
        raise DatasetError(f"data pack {str(path)!r} was made from other data than the config names: "
                           f"{'; '.join(problems)}; rebuild it with: edge-deblur pack --config <this recipe> --out {path}")


def verify_sources(manifest: dict) -> list[str]:
    """Source files (where they are reachable) whose checksum differs from the pack's: the data
    changed since the pack was made. Unreachable roots are skipped (the device machine)."""
    bad = []
    for it in manifest["items"]:
        p = Path(it["root"]) / it["source"]
        if p.is_file() and _sha(p.read_bytes()) != it["source_sha256"]:
            bad.append(str(p))
    return bad


@dataclass
class PackContents:
    """Decoded pack: uint8 RGB arrays."""

    path: str
    manifest: dict
    sharp: list[np.ndarray] = field(default_factory=list)
    sharp_names: list[str] = field(default_factory=list)
    # (scene, frame, blur, sharp) for training pairs; val pairs per root@scene set
    pairs: list[tuple[str, str, np.ndarray, np.ndarray]] = field(default_factory=list)
    val: dict[str, list[tuple[str, str, np.ndarray, np.ndarray]]] = field(default_factory=dict)


def open_pack(path: str | os.PathLike, sharp_roots: Optional[Sequence[str]] = None,
              pair_roots: Sequence[str] = (), pair_exclude: Sequence[str] = (), check_sources: bool = True,
              workers: int = 0, want_val: bool = False) -> PackContents:
    """Read and decode a pack. With ``sharp_roots`` given, the pack must match the recipe
    (``check_matches``). Every member's bytes are checked against the manifest's SHA-256, and
    with ``check_sources`` every reachable source file against the checksum it had when packed."""
    m = read_manifest(path)
    if sharp_roots is not None:
        check_matches(m, path, sharp_roots, pair_roots, pair_exclude)
    if check_sources:
        bad = verify_sources(m)
        if bad:
            raise DatasetError(f"data pack {str(path)!r} does not match its sources: {len(bad)} file(s) changed since it "
                               f"was packed (checksum mismatch), e.g. {bad[0]!r}; rebuild it with edge-deblur pack")
    workers = workers or min(8, os.cpu_count() or 1)
    by_name = {it["name"]: it for it in m["items"]}
    if sharp_roots is not None:  # decode only what the recipe uses (and the validation pairs if wanted)
        used = {it["name"] for it in m["items"] if it["kind"] == "sharp" and it["root"] in set(map(str, sharp_roots))}
        for p in m["pairs"]:
            if (p["group"] == "train" and p["root"] in set(map(str, pair_roots))) or (p["group"] == "val" and want_val):
                used |= {p["blur"], p["sharp"]}
        by_name = {n: it for n, it in by_name.items() if n in used}
    blobs = {}
    with zipfile.ZipFile(path) as zf:
        for n in by_name:
            try:
                blobs[n] = zf.read(n)
            except (zipfile.BadZipFile, KeyError) as e:
                raise DatasetError(f"data pack {str(path)!r}: member {n!r} fails its checksum or is missing ({e}); "
                                   "rebuild the pack with edge-deblur pack") from e

    def dec(name):
        data = blobs[name]
        if _sha(data) != by_name[name]["sha256"]:
            raise DatasetError(f"data pack {str(path)!r}: member {name!r} fails its checksum (corrupt or altered); "
                               "rebuild the pack with edge-deblur pack")
        return _decode(data, name)

    with cf.ThreadPoolExecutor(workers) as ex:
        decoded = dict(zip(by_name, ex.map(dec, by_name)))
    pc = PackContents(str(path), m)
    keep_roots = None if sharp_roots is None else {str(r) for r in sharp_roots}
    keep_pairs = None if sharp_roots is None else {str(r) for r in pair_roots}
    for it in m["items"]:
        if it["kind"] == "sharp" and (keep_roots is None or it["root"] in keep_roots):
            pc.sharp.append(decoded[it["name"]])
            pc.sharp_names.append(f"{it['root']}/{it['source']}")
    for p in m["pairs"]:
        if p["blur"] not in decoded:  # not used by this recipe
            continue
        entry = (p["scene"], p["frame"], decoded[p["blur"]], decoded[p["sharp"]])
        if p["group"] == "train":
            held_out = any(p["scene"] == n or p["scene"].rsplit("/", 1)[-1] == n for n in pair_exclude)
            if keep_pairs is None or (p["root"] in keep_pairs and not held_out):
                pc.pairs.append(entry)
        elif want_val:
            pc.val.setdefault(p["root"], []).append(entry)
    return pc


def unpack_pairs(path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the pack's validation pairs as PNG folders in GoPro layout
    (``out_dir/<set>/<scene>/{blur,sharp}/<frame>.png``) for ``edge-deblur eval``; returns
    {root as packed: folder}. Lossless: the pixels are the packed ones."""
    pc = open_pack(path, check_sources=False, want_val=True)
    out = {}
    for root, entries in pc.val.items():
        d = Path(out_dir) / Path(root).name
        for scene, frame, b, s in entries:
            for sub, img in (("blur", b), ("sharp", s)):
                f = d / scene / sub / f"{frame}.png"
                f.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(f), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
                    raise DatasetError(f"cannot write {str(f)!r}; check that {str(out_dir)!r} is writable")
        out[root] = d
    return out
