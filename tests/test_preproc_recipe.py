"""The workflow's preprocessing nodes compute exactly :func:`bmex_wf.preproc.recipe.network_input`."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import nibabel as nib
import numpy as np
import pytest

from bmex_wf.image.io import load_image, validate_mask
from bmex_wf.image.orientation import to_network_order
from bmex_wf.preproc.recipe import network_input
from bmex_wf.training.data import preprocess
from bmex_wf.workflows.base import init_bmex_wf
from tests.helpers import real_crop


def run_up_to(workflow, target: str, inputs: dict, base_dir) -> dict:
    """Run the nodes ``target`` depends on, in the workflow's order and with its connections.

    Returns each node's outputs by node name (``target`` itself is not run).
    """
    graph = workflow._graph
    end = workflow.get_node(target)
    outputs = {}
    for node in nx.topological_sort(graph.subgraph(nx.ancestors(graph, end))):
        for upstream, _, data in graph.in_edges(node, data=True):
            for source, field in data["connect"]:
                assert isinstance(source, str), f"{node.name}.{field} is connected through a function"
                value = (inputs[source] if upstream.name == "inputnode"
                         else getattr(outputs[upstream.name], source))
                if value is not None:
                    setattr(node.inputs, field, value)
        if node.name != "inputnode":
            node.base_dir = str(base_dir)
            outputs[node.name] = node.run().outputs
    return outputs


@pytest.fixture(scope="module")
def image_and_mask(tmp_path_factory):
    """A 100³ crop of a real (oblique) T1w and a spherical brain mask on its grid."""
    folder = tmp_path_factory.mktemp("recipe")
    image = real_crop(folder, size=100)
    img = nib.load(image)
    centre = (np.array(img.shape) - 1) / 2
    radius = np.linalg.norm(np.indices(img.shape).T - centre, axis=-1).T
    mask = folder / "mask.nii.gz"
    nib.Nifti1Image((radius < 40).astype(np.uint8), img.affine, img.header).to_filename(str(mask))
    return image, str(mask)


def test_workflow_nodes_feed_enhance_the_recipe_input(image_and_mask, tmp_path):
    image, mask = image_and_mask
    wf = init_bmex_wf(age_months=24, contrast="T1w", mask_source="precomputed")
    feeds = {(u.name, v.name): d["connect"] for u, v, d in wf._graph.edges(data=True)}
    assert ("outputnode.network_input", "inputnode.in_file") in feeds["preproc_wf", "enhance_wf"]
    assert ("outputnode.grid_mask", "inputnode.in_mask") in feeds["preproc_wf", "enhance_wf"]
    pre = wf.get_node("preproc_wf")
    outputs = run_up_to(pre, "outputnode", {"in_file": image, "in_mask": mask}, tmp_path)
    assert {"reorient", "window", "n4_head", "mask_head", "n4_brain", "to_grid",
            "mask_to_grid", "match_template"} <= set(outputs)

    img = load_image(image)
    n4 = pre.get_node("n4_head")
    expected = network_input(img, pre.get_node("match_template").inputs.template,
                             pre.get_node("to_grid").inputs.spacing,
                             mask=validate_mask(mask, img), bias_correction=n4 is not None,
                             num_threads=n4.inputs.num_threads if n4 else None)

    matched = nib.load(outputs["match_template"].out_file)
    data = to_network_order(np.asarray(matched.dataobj, dtype=np.float32))
    grid_mask = to_network_order(np.asarray(nib.load(outputs["mask_to_grid"].out_file).dataobj)) > 0
    assert data.shape == expected.data.shape
    assert expected.mask.sum() > 0.2 * expected.mask.size  # the sphere, on the 0.8 mm grid
    np.testing.assert_array_equal(grid_mask, expected.mask > 0)
    np.testing.assert_allclose(data, expected.data, rtol=0, atol=1e-3)
    assert np.allclose(matched.affine, expected.image.affine, atol=1e-5)
    record = json.loads(Path(outputs["match_template"].out_landmarks).read_text())
    assert record["reference_name"] == expected.landmarks["reference_name"]
    np.testing.assert_allclose(record["source"]["quantiles"], expected.landmarks["source"]["quantiles"],
                               atol=1e-3)

    # the training loader's input for the same image and mask is the workflow's too
    train_data, train_mask, spacing = preprocess(image, "Template-Month24-T1w", mask)
    assert spacing == pre.get_node("to_grid").inputs.spacing
    np.testing.assert_array_equal(train_mask > 0, grid_mask)
    np.testing.assert_allclose(train_data, data, rtol=0, atol=1e-3)
