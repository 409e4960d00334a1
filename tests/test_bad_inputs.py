"""Bad inputs are refused before any work: exit 1, one line naming the file, no image written.

A corpus generated in ``tmp_path``, one file per kind, through ``bmex-wf enhance`` and through
the participant level.
"""

from __future__ import annotations

import gzip

import nibabel as nb
import numpy as np
import pytest

from bmex_wf.cli.run import main as cli_main

SHAPE = (48, 56, 48)


def _brain(rng) -> np.ndarray:
    return rng.normal(500, 100, SHAPE).clip(1, None).astype(np.float32)


def _write(path, data, affine=None):
    img = nb.Nifti1Image(data, np.eye(4))
    if affine is not None:  # written into the sform by hand: nibabel refuses singular qforms
        header = img.header
        header["qform_code"], header["sform_code"] = 0, 1
        header["srow_x"], header["srow_y"], header["srow_z"] = affine[:3]
        img = nb.Nifti1Image(data, None, header)
    img.to_filename(path)


def _corpus(folder) -> dict:
    """``{kind: (file, words the refusal must contain)}``."""
    rng = np.random.default_rng(0)
    files = {}

    def add(kind, words, data=None, affine=None, raw=None):
        path = folder / f"{kind}.nii.gz"
        if raw is not None:
            path.write_bytes(raw)
        else:
            _write(path, data, affine)
        files[kind] = (path, words)

    add("constant", "constant", np.full(SHAPE, 500, np.int16))
    near = np.full(SHAPE, 500.0, np.float32)
    near[::7] += 1.0
    add("near_constant", "constant", near)
    add("tiny", "too small", _brain(rng)[:10, :10, :10])
    add("negative", "no positive voxel", -_brain(rng))
    add("singular_affine", "singular", _brain(rng), affine=np.diag([1.0, 1.0, 0.0, 1.0]))
    add("empty_file", "empty", raw=b"")
    add("all_zero", "all voxels are zero", np.zeros(SHAPE, np.float32))
    nan = _brain(rng)
    nan[3, 3, 3] = np.nan
    add("nan", "NaN", nan)
    add("four_d", "volumes", np.stack([_brain(rng)] * 2, axis=-1))
    add("two_d", "2-D", _brain(rng)[:, :, :1].squeeze()[..., None][:, :, 0])
    add("text", "not a readable", raw=b"this is not an image\n")
    good = folder / "good.nii.gz"
    _write(good, _brain(rng))
    add("truncated_gzip", "truncated", raw=good.read_bytes()[:2000])
    add("empty_gzip", "not a readable", raw=gzip.compress(b""))
    good.unlink()
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("kind", ["constant", "near_constant", "tiny", "negative", "singular_affine",
                                  "empty_file", "all_zero", "nan", "four_d", "two_d", "text",
                                  "truncated_gzip", "empty_gzip"])
def test_enhance_refuses(corpus, kind, tmp_path, caplog):
    path, words = corpus[kind]
    out = tmp_path / "out"
    code = cli_main(["enhance", str(path), str(out), "--age-months", "24", "--contrast", "T1w", "--device", "cpu",
                     "--nprocs", "1"])
    assert code == 1
    refusal = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert refusal and words in refusal[0], caplog.text
    assert "\n" not in refusal[0].split(": ", 1)[1].strip()
    assert not list(out.rglob("*.nii*")) if out.exists() else True


def test_participant_refuses_each_and_keeps_going(corpus, tmp_path, caplog):
    """Every bad image of a dataset is refused with its own line; none is written."""
    import json
    import shutil

    bids = tmp_path / "bids"
    kinds = ["constant", "tiny", "negative", "singular_affine", "empty_file"]
    for number, kind in enumerate(kinds, start=1):
        anat = bids / f"sub-{number:02d}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(corpus[kind][0], anat / f"sub-{number:02d}_T1w.nii.gz")
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "bad", "BIDSVersion": "1.9.0"}))
    out = tmp_path / "out"
    code = cli_main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"),
                     "--age-months", "24", "--device", "cpu", "--nprocs", "1",
                     "--skip-bids-validation"])
    assert code == 1
    for number, kind in enumerate(kinds, start=1):
        name = f"sub-{number:02d}_T1w.nii.gz"
        lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and name in r.getMessage()]
        assert any(corpus[kind][1] in line for line in lines), (kind, lines)
    assert not list(out.rglob("*.nii*"))
    assert "0 of 5 images processed successfully" in caplog.text
