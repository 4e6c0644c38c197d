"""``dynamic_size=True`` through the dynamo exporter for genotypes other than NASNet-A (whose
classifier tests/test_export.py covers): a PNASNet backbone and a DARTS classifier, each exact in
onnxruntime at sizes of both parities that were neither traced nor verified by the export itself."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

import nasnet_backbones as nb
from export import export_backbone, export_classifier


def _dims(values) -> list[list[int | str]]:
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


def _worst_rel(session: ort.InferenceSession, expected: list[np.ndarray], x: torch.Tensor) -> float:
    got = session.run(None, {"input": x.numpy()})
    assert [g.shape for g in got] == [e.shape for e in expected], list(x.shape)
    return max(float(np.abs(g - e).max() / np.abs(e).max()) for g, e in zip(got, expected))


def test_pnasnet_backbone_takes_any_size(tmp_path):
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.PNASNET_5, num_cells=3, num_filters=8, stem="imagenet",
                            features_only=True).eval()
    path = tmp_path / "pnas.onnx"
    report = export_backbone(model, path, input_size=64, dynamic_size=True)
    names = report.outputs
    assert names == ["stride2", "stride4", "stride8", "stride16", "stride32"]
    graph = onnx.load(str(path))
    assert _dims(graph.graph.input) == [["batch", 3, "height", "width"]]
    # Each stride's map has its own named height and width, as with the TorchScript exporter.
    assert _dims(graph.graph.output) == [["batch", model.feature_info[i]["num_chs"], f"{n}_height", f"{n}_width"]
                                         for i, n in enumerate(names)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(64, 65), (96, 96), (77, 120)]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            features = model(x)
        assert _worst_rel(session, [features[n].numpy() for n in names], x) <= 1e-4, (h, w)


def test_darts_classifier_takes_any_size(tmp_path):
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.DARTS_V2, num_cells=3, num_filters=8, stem="cifar", num_classes=10,
                            img_size=32).eval()
    path = tmp_path / "darts.onnx"
    report = export_classifier(model, path, input_size=32, dynamic_size=True)
    assert report.verified_inputs[-1] == [1, 3, 65, 63]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["min_input_size"] == "8"  # the CIFAR stem's deepest stride is 4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(8, 9), (31, 32), (40, 57)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        assert _worst_rel(session, [expected], x) <= 1e-4, (h, w)
