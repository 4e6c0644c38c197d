import pickle

import pytest
import torch
from safetensors.torch import save_file

import nasnet_backbones as nb
from nasnet_backbones.checkpoint import CheckpointError, read_state_dict
from nasnet_backbones.convert import CheckpointMismatchError, describe_checkpoint


def test_cadene_checkpoint_loads_through_create_model(cadene_mobile, tmp_path):
    path = tmp_path / "nasnetamobile.pth"
    # Old checkpoints carry no num_batches_tracked counters; the loader must accept that.
    state = {k: v for k, v in cadene_mobile.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model = nb.create_model("nasnet_a_mobile", pretrained=path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), cadene_mobile(x), atol=1e-5, rtol=1e-4)


def test_tf_1001_class_classifier_drops_background(cadene_mobile, tmp_path):
    state = dict(cadene_mobile.state_dict())
    state["last_linear.weight"] = torch.cat([torch.zeros(1, 1056), state["last_linear.weight"]])
    state["last_linear.bias"] = torch.cat([torch.zeros(1), state["last_linear.bias"]])
    path = tmp_path / "tf1001.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = nb.create_model("nasnet_a_mobile", pretrained=path)
    torch.testing.assert_close(model.classifier.weight, cadene_mobile.last_linear.weight)


def test_own_format_round_trip(tmp_path, tiny_imagenet_model):
    saved = tiny_imagenet_model.state_dict()
    for name in ("w.pth", "w.safetensors"):
        nb.save_checkpoint(tiny_imagenet_model, tmp_path / name)
        for aux in (True, False):  # an aux-trained checkpoint also loads into an inference model
            other = nb.build_nasnet(nb.genotypes.NASNET_A, 3, 8, num_classes=10, img_size=96, aux_head=aux)
            nb.load_checkpoint(other, tmp_path / name)
            assert any(k.startswith("aux_head.") for k in other.state_dict()) == aux
            for k, v in other.state_dict().items():
                assert torch.equal(v, saved[k]), k


def test_wrong_model_checkpoint_says_what_it_looks_like(cadene_mobile, tmp_path):
    path = tmp_path / "mobile.pth"
    torch.save(cadene_mobile.state_dict(), path)
    with pytest.raises(CheckpointMismatchError) as info:
        nb.create_model("pnasnet_5_mobile", pretrained=path)
    message = str(info.value)
    assert "looks like a NASNet-A checkpoint in the Cadene/timm layout with 14 cells" in message
    assert "1056 features -> 1000 classes" in message
    assert "missing from checkpoint" in message and "unexpected in checkpoint" in message


def test_shape_mismatch_is_reported(cadene_mobile, tmp_path):
    path = tmp_path / "mobile.pth"
    torch.save(cadene_mobile.state_dict(), path)
    # A wider backbone: the classifier is re-initialised (other width), but the cells cannot load.
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch \(\d+\): stem.conv.weight: model \(48, 3, 3, 3\)"):
        nb.create_model("nasnet_a_mobile", pretrained=path, num_filters=48, stem_filters=48)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/nasnet_pwned",))


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": _Exploit()}}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        read_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a state dict"):
        read_state_dict(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.pth")


def test_describe_unknown_layout():
    assert "unrecognised layout" in describe_checkpoint({"foo.weight": torch.zeros(1)})
