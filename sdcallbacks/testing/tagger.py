"""A WD14-format tagger for the shapes world: ``model.onnx`` + ``selected_tags.csv``.

The graph has the published interface (NHWC float32 BGR 0..255 at 448x448 in, one (N, n_tags) output of
sigmoid probabilities, CSV rows = output columns, ratings first) and computes each colour tag from the
image: the share of pixels near the tag's colour, passed through a steep sigmoid around a threshold share.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sdcallbacks.testing.shapes import BACKGROUND_COLOURS, SQUARE_COLOURS

RATING_TAGS = ("general", "sensitive", "questionable", "explicit")
RATING_PROBS = (0.95, 0.04, 0.005, 0.005)
SIGMA = 55.0  # colour kernel width in 0..255 units
SLOPE = 60.0  # sigmoid slope on the pixel share
SQUARE_SHARE = 0.05  # a square covers at least this share of the image to be tagged
BACKGROUND_SHARE = 0.30


def shape_tags() -> list[tuple[str, tuple[int, int, int], float]]:
    """(tag, RGB prototype, share threshold) for every general tag, in CSV order."""
    tags = [(f"{name}_square", rgb, SQUARE_SHARE) for name, rgb in SQUARE_COLOURS.items()]
    tags += [(f"{name}_background", rgb, BACKGROUND_SHARE) for name, rgb in BACKGROUND_COLOURS.items()]
    return tags


def write_selected_tags(path: Path) -> None:
    """``tag_id,name,category,count`` rows: 4 ratings (category 9), then general tags (category 0)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, name in enumerate(RATING_TAGS):
            writer.writerow([9999990 + i, name, 9, 1000000])
        for i, (name, _, _) in enumerate(shape_tags()):
            writer.writerow([i + 1, name, 0, 10000 - i])


def write_tagger_onnx(
    path: Path, input_name: str = "input_1:0", output_name: str = "predictions_sigmoid"
) -> None:
    """Write the colour-reading tagger graph (opset 17), named like wd-v1-4-moat-tagger-v2."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tags = shape_tags()
    # Prototypes in BGR, the channel order WD14 models take.
    protos = np.array([rgb[::-1] for _, rgb, _ in tags], dtype=np.float32)  # (K, 3)
    shares = np.array([s for _, _, s in tags], dtype=np.float32)
    init = [
        numpy_helper.from_array(protos, "protos"),
        numpy_helper.from_array(np.array([-1.0 / (2 * SIGMA**2)], dtype=np.float32), "neg_inv_2s2"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array([3], dtype=np.int64), "unsq_axis"),
        numpy_helper.from_array(shares, "shares"),
        numpy_helper.from_array(np.array([SLOPE], dtype=np.float32), "slope"),
        numpy_helper.from_array(np.array([RATING_PROBS], dtype=np.float32), "ratings"),
        numpy_helper.from_array(np.array([0.0], dtype=np.float32), "zero"),
    ]
    nodes = [
        # Downsample 448 -> 32 first: the colour shares need no more resolution.
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Transpose", ["pooled"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Unsqueeze", ["nhwc", "unsq_axis"], ["px"]),  # (N,32,32,1,3)
        helper.make_node("Sub", ["px", "protos"], ["diff"]),  # (N,32,32,K,3)
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "last_axis"], ["dist2"], keepdims=0),  # (N,32,32,K)
        helper.make_node("Mul", ["dist2", "neg_inv_2s2"], ["logk"]),
        helper.make_node("Exp", ["logk"], ["member"]),
        helper.make_node("ReduceMean", ["member"], ["share"], axes=[1, 2], keepdims=0),  # (N,K)
        helper.make_node("Sub", ["share", "shares"], ["margin"]),
        helper.make_node("Mul", ["margin", "slope"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["general"]),
        # Ratings are constants broadcast to the batch.
        helper.make_node("ReduceSum", ["general", "last_axis"], ["gsum"], keepdims=1),  # (N,1)
        helper.make_node("Mul", ["gsum", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "ratings"], ["rating_probs"]),  # (N,4)
        helper.make_node("Concat", ["rating_probs", "general"], [output_name], axis=1),
    ]
    nodes[0].input[0] = input_name
    graph = helper.make_graph(
        nodes,
        "shapes_wd14_tagger",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 448, 448, 3])],
        [
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, ["batch", len(RATING_TAGS) + len(tags)]
            )
        ],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sdcallbacks")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_tagger(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_selected_tags(folder / "selected_tags.csv")
    write_tagger_onnx(folder / "model.onnx")
    return folder
