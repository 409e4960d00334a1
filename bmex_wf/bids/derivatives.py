"""BIDS-Derivatives outputs of bmex-wf: names, sidecars, dataset files, atomic writes.

For a source ``sub-01_ses-1_run-2_T1w.nii.gz`` (``<src>`` = ``sub-01_ses-1_run-2``, ``<C>`` =
``T1w``) the outputs are, next to the source's BIDS path under the output directory::

    <src>_desc-enhanced_<C>.nii.gz               enhanced image, skull kept
    <src>_desc-enhancedbrain_<C>.nii.gz          enhanced brain only
    <src>_space-<C>_desc-brain_mask.nii.gz       brain mask
    <src>_space-<C>_dseg.nii.gz                  tissue labels (dseg.tsv at the root)
    <src>_space-<C>_label-<CSF|GM|WM>_probseg.nii.gz

and, on the network grid (``res-0p8``; ``res-0p75`` fetal), the same with ``res-<label>``
after ``space-`` (BIDS entity order): ``<src>_res-0p8_desc-enhanced_<C>.nii.gz``,
``<src>_space-<C>_res-0p8_dseg.nii.gz``, ...; their sidecars carry ``Resolution``.

Every file is written to a temporary name in its final folder and moved into place with
``os.replace``, so no partial file is ever visible; files shared by all subjects
(``dataset_description.json``, ``.bidsignore``, ``dseg.tsv``, citations) are created once,
race-free, with ``os.link``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .. import __packagename__, __url__, __version__
from ..labels import TISSUES
from ..resolution import resolution_description, resolution_label

LOGGER = logging.getLogger("bmex_wf.derivatives")

#: Tissue classes of the label map (index -> name), background excluded.
#: Output keys in the order they are written.
OUTPUT_KEYS = ("enhanced", "enhanced_brain", "brain_mask", "dseg",
               *(f"probseg_{name}" for name in TISSUES.values()))
BIDS_VERSION = "1.9.0"
_NIFTI = re.compile(r"\.nii(\.gz)?$")


# --------------------------------------------------------------------------- atomic writes
def _temp_in(folder: Path, name: str) -> tuple[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)


@contextmanager
def _atomic_target(path: Path):
    """Yield a binary handle on a temporary file that replaces ``path`` on success."""
    fd, tmp = _temp_in(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    with _atomic_target(path) as handle:
        handle.write(data)
    return path


def atomic_write_text(path, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, data) -> Path:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_copy(src, dst) -> Path:
    """Copy ``src`` to ``dst`` atomically; a ``.nii`` source is gzipped for a ``.gz`` target."""
    src, dst = Path(src), Path(dst)
    with _atomic_target(dst) as out, open(src, "rb") as inp:
        if dst.suffix == ".gz" and src.suffix != ".gz":
            with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as zipped:
                shutil.copyfileobj(inp, zipped)
        else:
            shutil.copyfileobj(inp, out)
    return dst


def write_once(path, text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists; safe when many processes race.

    Returns ``True`` if this call created the file. The content appears complete or not at
    all (hard link of a fully written temporary file, which fails if the name exists).
    """
    path = Path(path)
    if path.exists():
        return False
    fd, tmp = _temp_in(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # file systems without hard links: last complete writer wins
            os.replace(tmp, path)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


# --------------------------------------------------------------------------- names
def source_entities(source_name: str, contrast: str) -> str:
    """``<src>``: the source file name without extension and ``_<contrast>`` suffix.

    >>> source_entities("sub-01_ses-1_run-2_T1w.nii.gz", "T1w")
    'sub-01_ses-1_run-2'
    """
    stem = _NIFTI.sub("", Path(source_name).name)
    return stem[: -len(contrast) - 1] if stem.endswith(f"_{contrast}") else stem


def derivative_names(source_name: str, contrast: str,
                     voxel_mm: float | None = None) -> dict[str, str]:
    """File names of every output of one image, keyed by :data:`OUTPUT_KEYS`.

    ``voxel_mm`` names the network-grid outputs (``res-<label>`` after ``space-``).
    """
    src = source_entities(source_name, contrast)
    res = "" if voxel_mm is None else f"_res-{resolution_label(voxel_mm)}"
    space = f"_space-{contrast}{res}"
    names = {
        "enhanced": f"{src}{res}_desc-enhanced_{contrast}.nii.gz",
        "enhanced_brain": f"{src}{res}_desc-enhancedbrain_{contrast}.nii.gz",
        "brain_mask": f"{src}{space}_desc-brain_mask.nii.gz",
        "dseg": f"{src}{space}_dseg.nii.gz",
    }
    for name in TISSUES.values():
        names[f"probseg_{name}"] = f"{src}{space}_label-{name}_probseg.nii.gz"
    return names


def derivative_folder(output_dir, source_file, bids_dir=None) -> Path:
    """Folder of an image's outputs: its BIDS folder under ``output_dir`` (or the root)."""
    output_dir, source_file = Path(output_dir), Path(source_file).absolute()
    if bids_dir is not None:
        bids_dir = Path(bids_dir).absolute()
        if source_file.is_relative_to(bids_dir):
            return output_dir / source_file.parent.relative_to(bids_dir)
    return output_dir


def source_uri(source_file, bids_dir=None) -> str:
    """BIDS URI of the source (``bids:raw:<path>``), or a file URI outside a dataset."""
    source_file = Path(source_file).absolute()
    if bids_dir is not None and source_file.is_relative_to(Path(bids_dir).absolute()):
        return "bids:raw:" + source_file.relative_to(Path(bids_dir).absolute()).as_posix()
    return source_file.as_uri()


# --------------------------------------------------------------------------- sidecars
def network_grid_metadata(key: str, voxel_mm: float) -> dict:
    """Sidecar entries of a network-grid output: its ``Resolution`` and how it was made."""
    made = {
        "enhanced": "Inside the brain mask the network's enhanced brain (matched to the "
                    "original's intensities), outside it the original image resampled onto "
                    "this grid by linear interpolation",
        "enhanced_brain": "None: the network's output on its own grid",
        "brain_mask": "Nearest neighbour: the brain mask resampled onto this grid",
    }.get(key, "None: the network's class scores on its own grid")
    return {"Resolution": resolution_description(voxel_mm), "Interpolation": made}


def sidecar_metadata(key: str, *, source: str, mask_uri: str | None, contrast: str,
                     common: dict, voxel_mm: float | None = None) -> dict:
    """JSON sidecar of one output (``key`` from :data:`OUTPUT_KEYS`; ``voxel_mm``: on the
    network grid)."""
    meta = dict(common)
    meta["Sources"] = [source] + ([mask_uri] if mask_uri and key != "brain_mask" else [])
    meta["SpatialReference"] = source
    meta["SkullStripped"] = key != "enhanced"
    if key == "brain_mask":
        meta["Type"] = "Brain"
    elif key.startswith("probseg_"):
        meta["Label"] = key.split("_", 1)[1]
    elif key == "dseg":
        meta["Labels"] = {str(i): name for i, name in TISSUES.items()}
    if key.startswith("enhanced"):
        meta["Description"] = ("BME-X enhanced image" + (", brain only" if key == "enhanced_brain"
                                                         else ", skull kept") + f" ({contrast})")
    if voxel_mm is not None:
        meta.update(network_grid_metadata(key, voxel_mm))
    return meta


def write_image_outputs(*, output_dir, source_file, contrast: str, files: dict,
                        metadata: dict | None = None, bids_dir=None,
                        voxel_mm: float | None = None) -> list[Path]:
    """Copy one image's outputs into the derivatives tree with their sidecars, atomically.

    Parameters
    ----------
    output_dir : path
        Root of the derivatives dataset.
    source_file : path
        The input image (inside ``bids_dir`` for a BIDS run).
    contrast : str
        ``T1w`` or ``T2w``.
    files : dict
        Output key (:data:`OUTPUT_KEYS`) -> file produced by the workflow.
    metadata : dict, optional
        Entries shared by every sidecar (QI, age, model, ...).
    bids_dir : path, optional
        Root of the input dataset (outputs mirror its layout).
    voxel_mm : float, optional
        The files are on the network grid of this voxel size (``res-`` names and sidecars).

    Returns
    -------
    list of Path
        Every file written (images and sidecars).
    """
    missing = [key for key in OUTPUT_KEYS if key not in files]
    if missing:
        raise ValueError(f"{source_file}: outputs missing for {', '.join(missing)}")
    folder = derivative_folder(output_dir, source_file, bids_dir)
    names = derivative_names(Path(source_file).name, contrast, voxel_mm)
    source = source_uri(source_file, bids_dir)
    rel = folder.relative_to(Path(output_dir)).as_posix()
    mask_uri = f"bids::{rel + '/' if rel != '.' else ''}{names['brain_mask']}"
    written = []
    for key in OUTPUT_KEYS:
        target = folder / names[key]
        atomic_copy(files[key], target)
        meta = sidecar_metadata(key, source=source, mask_uri=mask_uri, contrast=contrast,
                                common=metadata or {}, voxel_mm=voxel_mm)
        written += [target, atomic_write_json(_NIFTI.sub(".json", str(target)), meta)]
    return written


# --------------------------------------------------------------------------- dataset files
def dataset_description(bids_dir=None) -> dict:
    """``dataset_description.json`` of the outputs."""
    desc = {
        "Name": "bmex-wf outputs: BME-X enhanced images, brain masks and tissue maps",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": __packagename__, "Version": __version__, "CodeURL": __url__}],
        "HowToAcknowledge": "Please cite BME-X and bmex-wf; see logs/CITATION.md.",
    }
    if os.environ.get("BMEX_CONTAINER_IMAGE"):
        desc["GeneratedBy"][0]["Container"] = {"Type": "docker",
                                               "Tag": os.environ["BMEX_CONTAINER_IMAGE"]}
    if bids_dir is not None:
        uri = Path(bids_dir).absolute().as_uri()
        desc["SourceDatasets"] = [{"URL": uri}]
        desc["DatasetLinks"] = {"raw": uri}
    return desc


def write_dataset_files(output_dir, bids_dir=None) -> None:
    """``dataset_description.json``, ``.bidsignore`` and ``dseg.tsv``, each created once."""
    output_dir = Path(output_dir)
    text = json.dumps(dataset_description(bids_dir), indent=2, sort_keys=True) + "\n"
    if not write_once(output_dir / "dataset_description.json", text):
        existing = json.loads((output_dir / "dataset_description.json").read_text())
        if existing.get("DatasetType") != "derivative":
            raise ValueError(f"{output_dir}: holds a dataset that is not a derivative; "
                             "choose another output directory")
    write_once(output_dir / ".bidsignore", "logs/\n*.html\n*/figures/\n*_qc.json\n")
    rows = ["index\tname"] + [f"{index}\t{name}" for index, name in TISSUES.items()]
    write_once(output_dir / "dseg.tsv", "\n".join(rows) + "\n")


def write_citation(output_dir, markdown: str, bibtex: str | None = None) -> None:
    """``logs/CITATION.md`` (and ``.bib``) from the workflow boilerplate, created once."""
    logs = Path(output_dir) / "logs"
    write_once(logs / "CITATION.md", markdown.rstrip() + "\n")
    if bibtex:
        write_once(logs / "CITATION.bib", bibtex.rstrip() + "\n")
