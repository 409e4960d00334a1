"""File handling shared by the interfaces: reading inputs, naming and writing outputs.

Inputs are read with the checks of :mod:`bmex_wf.image.io`; outputs are written atomically
after all computation, so a bad input gives one ImageError naming the file and leaves no output.
"""

from __future__ import annotations

from nipype.interfaces.base import File, SimpleInterface, TraitedSpec
from nipype.utils.filemanip import fname_presuffix


class OutFileSpec(TraitedSpec):
    out_file = File(exists=True, desc="the step's one output file (its interface says what it holds)")


class OutFileInterface(SimpleInterface):
    """A step with one output, ``out_file``: the path that :meth:`_write` returns."""

    output_spec = OutFileSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = self._write(runtime)
        return runtime

    def _write(self, runtime) -> str:
        raise NotImplementedError


def read(path, validate: bool = False):
    """Read an image as float32-ready nibabel image (``validate``: full input checks)."""
    from ..image.io import load_image, read_image

    return load_image(path) if validate else read_image(path)


def read_mask(path, reference):
    """Boolean mask from ``path`` on the grid of the ``reference`` image."""
    import numpy as np

    from ..image.io import validate_mask

    return np.asanyarray(validate_mask(path, reference).dataobj) > 0


def check_same_grid(img, reference, path, reference_path) -> None:
    """Raise ImageError unless ``img`` lies on the grid of ``reference``."""
    import numpy as np

    from ..image.io import ImageError

    if img.shape[:3] != reference.shape[:3] or not np.allclose(
        img.affine, reference.affine, atol=1e-4
    ):
        raise ImageError(
            f"{path}: grid (shape {img.shape[:3]}) differs from that of {reference_path} "
            f"(shape {reference.shape[:3]}); resample it first"
        )


def save_like(data, reference, in_file, suffix, cwd) -> str:
    """Write ``data`` with the reference's geometry as ``<in_file stem><suffix>.nii.gz`` in ``cwd``."""
    from ..image.header import header_image
    from ..image.io import save_image

    out = out_path(in_file, suffix, cwd)
    save_image(header_image(data, reference.affine, reference.header), out)
    return out


def data_of(img):
    """The array of an image made by a :mod:`bmex_wf.preproc.recipe` step."""
    import numpy as np

    return np.asanyarray(img.dataobj)


def as_image_error(path, exc: ValueError):
    """ImageError ``"<path>: <problem>"`` from a ValueError raised by a utility function."""
    from ..image.io import ImageError

    return exc if isinstance(exc, ImageError) else ImageError(f"{path}: {exc}")


def out_path(in_file: str, suffix: str, cwd: str, ext: str = ".nii.gz") -> str:
    """``<cwd>/<in_file stem><suffix><ext>``."""
    return fname_presuffix(in_file, suffix=suffix, newpath=cwd, use_ext=False) + ext


def is_plain_nifti(path: str) -> bool:
    """Whether ``path`` is a NIfTI-1 file holding exactly a 3-D array."""
    import nibabel as nb

    img = nb.load(path)
    return type(img) is nb.Nifti1Image and len(img.shape) == 3


def write_image(img, in_file: str, suffix: str, cwd: str) -> str:
    from ..image.io import save_image

    return str(save_image(img, out_path(in_file, suffix, cwd)))


def read_named(path):
    """Read an image whose errors and messages name ``path``."""
    from ..image.io import read_image

    img = read_image(path)
    img.set_filename(str(path))
    return img


def mask_on(mask_file, reference):
    """The brain mask on the grid of ``reference`` (nearest neighbour), named after its file."""
    from ..image.io import validate_mask

    mask = validate_mask(mask_file, reference)
    mask.set_filename(str(mask_file))
    return mask
