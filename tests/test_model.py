import pytest
import torch

import nasnet_backbones as nb
from nasnet_backbones import NASNetOutputs, genotypes


def test_tiny_forward_and_backward(tiny_imagenet_model):
    x = torch.randn(2, 3, 96, 96)
    model = tiny_imagenet_model.train()
    out = model(x)
    assert isinstance(out, NASNetOutputs)
    assert out.logits.shape == (2, 10) and out.aux_logits.shape == (2, 10)
    (out.logits.sum() + 0.4 * out.aux_logits.sum()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters()), "every parameter gets a gradient"
    model.eval()
    assert model(x).shape == (2, 10)  # eval: plain logits, no aux head


@pytest.mark.parametrize("size", [96, 128, 80])
def test_aux_head_works_at_other_sizes(tiny_imagenet_model, size):
    out = tiny_imagenet_model.train()(torch.randn(2, 3, size, size))
    assert out.aux_logits.shape == (2, 10)


@pytest.mark.parametrize("size", [224, 256, 96])
def test_features_only_mobile(size):
    model = nb.create_model("nasnet_a_mobile", features_only=True).eval()
    assert not hasattr(model, "dropout") and isinstance(model.classifier, torch.nn.Identity)
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    info = {f["name"]: f for f in model.feature_info}
    assert list(feats) == ["stride2", "stride4", "stride8", "stride16", "stride32"]
    for name, t in feats.items():
        stride = info[name]["reduction"]
        assert t.shape[1] == info[name]["num_chs"]
        if stride > 2:  # the VALID stem conv makes stride 2 one pixel smaller
            assert t.shape[-2:] == (size // stride, size // stride), name
        assert (t >= 0).all()  # ReLU-activated, as the next cell consumes them
    assert [f["num_chs"] for f in model.feature_info] == [32, 44, 264, 528, 1056]
    assert [f["module"] for f in model.feature_info] == ["stem", "cells.stem_0", "cells.cell_3", "cells.cell_7",
                                                         "cells.cell_11"]
    assert all(f["module"] in dict(model.named_modules()) for f in model.feature_info)


def test_features_match_classifier_path(tiny_imagenet_model):
    x = torch.randn(1, 3, 96, 96)
    model = tiny_imagenet_model.eval()
    feats = nb.build_nasnet(genotypes.NASNET_A, 3, 8, num_classes=10, img_size=96, features_only=True,
                            out_strides=(8, 32), aux_head=True)
    feats.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith(("classifier", "aux_head"))})
    feats.eval()
    out = feats(x)
    assert list(out) == ["stride8", "stride32"]
    torch.testing.assert_close(out["stride32"], torch.relu(model.forward_features(x)))


def test_out_strides_must_exist():
    with pytest.raises(ValueError, match=r"out_strides \[64\] not available"):
        nb.create_model("nasnet_a_mobile", features_only=True, out_strides=(8, 64))


def test_cifar_model_features_and_shape(tiny_cifar_model):
    assert [f["reduction"] for f in tiny_cifar_model.feature_info] == [1, 2, 4]
    assert tiny_cifar_model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_first_cell_reads_raw_stem():
    """TF's _cifar_stem returns [None, net]: cell 0's state 1 is the raw 3F-wide stem output,
    which the normal cell concatenates after a 1x1 + BN (TF _combine_unused_states)."""
    model = nb.create_model("nasnet_a_cifar_6_768")
    cell0 = model.cells["cell_0"]
    assert cell0.prev_is_raw and list(cell0.concat_adjust) == ["1"]
    assert not model.cells["cell_1"].prev_is_raw


def test_large_skip_reduction_layer_input():
    large = nb.create_model("nasnet_a_large")
    links = {l.name: l for l in large._links}
    names = ["stem"] + [l.name for l in large._links]
    # TF-slim large: the first cell after a reduction reads the cell before the reduction's input.
    assert names[links["cell_6"].prev] == "cell_4"
    assert names[links["reduction_0"].prev] == "cell_4" and names[links["reduction_0"].input] == "cell_5"
    mobile = nb.create_model("nasnet_a_mobile")
    names = ["stem"] + [l.name for l in mobile._links]
    assert names[{l.name: l for l in mobile._links}["cell_4"].prev] == "cell_3"


def test_create_model_options():
    m = nb.create_model("nasnet_a_large", drop_path_prob=0.3, num_classes=5, aux_head=False)
    assert m.config.drop_path_prob == 0.3 and m.classifier.out_features == 5 and m.aux_head is None
    m = nb.create_model("nasnet_a_mobile", num_classes=0).eval()
    assert m(torch.randn(1, 3, 224, 224)).shape == (1, 1056)
    with pytest.raises(TypeError, match="create_model"):
        nb.create_model("nasnet_a_mobile", no_such_option=1)
    with pytest.raises(ValueError, match="unknown model 'nasnet_b'.*Registered models:"):
        nb.create_model("nasnet_b")
    with pytest.raises(ValueError, match="drop_path_prob must be in"):
        nb.create_model("nasnet_a_mobile", drop_path_prob=1.5)


def test_reset_classifier(tiny_imagenet_model):
    tiny_imagenet_model.reset_classifier(3)
    out = tiny_imagenet_model.train()(torch.randn(2, 3, 96, 96))
    assert out.logits.shape == (2, 3) and out.aux_logits.shape == (2, 3)


@pytest.mark.parametrize("name", sorted(genotypes.GENOTYPES))
def test_every_shipped_genotype_builds_and_runs(name):
    model = nb.build_nasnet(genotypes.GENOTYPES[name], num_cells=3, num_filters=8, stem="cifar",
                            num_classes=10).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_genotype_with_concat_combine_and_all_paper_ops():
    B = nb.Block
    blocks = (
        B((0, 1), ("identity", "conv_1x3_3x1")),
        B((0, 2), ("conv_1x7_7x1", "dil_conv_3x3"), "concat"),  # a 2F-wide state read by later ops
        B((1, 3), ("avg_pool_3x3", "max_pool_3x3")),
        B((4, 0), ("max_pool_5x5", "max_pool_7x7")),
        B((5, 1), ("conv_1x1", "conv_3x3")),
        B((6, 0), ("sep_conv_3x3", "sep_conv_5x5")),
        B((7, 2), ("sep_conv_7x7", "identity")),
    )
    assert {op for b in blocks for op in b.ops} == set(nb.NASNET_SEARCH_OPS)
    cell = nb.CellSpec(blocks, (0, 1, 8))  # concatenating the inputs needs reductions in a reduce cell
    model = nb.build_nasnet(nb.Genotype(cell, cell), num_cells=3, num_filters=8, stem="imagenet",
                            num_classes=10, img_size=96)
    assert list(model.cells["reduction_0"].concat_adjust) == ["0", "1"]
    assert model.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 10)


def test_run_cells_matches_forward_and_checks_positions(tiny_imagenet_model):
    model = tiny_imagenet_model.eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        last = model.run_cells({0: model.stem(x)}, 1, len(model.cell_positions()))
        torch.testing.assert_close(last, model.forward_features(x))
    with pytest.raises(IndexError, match="0 is the stem"):
        model.cell_inputs(0)
    with pytest.raises(ValueError, match="reads outputs"):
        model.run_cells({}, 2, 3)
