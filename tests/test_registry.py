"""Every registered model against the figures its paper reports.

Parameters (without the auxiliary head) within 1%, or within the paper's rounding when it prints
fewer digits than that (3.3M covers 3.25-3.35M); mult-adds (convs + linear, fvcore) within 3%.
The one exception is NASNet-A 7 @ 1920, explained at its registration: no integer width with
N = 7 lands within 1% of 22.6M, and the closest (base width 76) is 1.1% under.
"""

import pytest

import nasnet_backbones as nb
from nasnet_backbones.complexity import count_madds, count_params

MODELS = nb.list_models(include_aliases=False)
PARAM_TOLERANCE = {"nasnet_a_7_1920": 0.012}


def rounding_tolerance(value: float) -> float:
    decimals = len(str(value).split(".")[1]) if "." in str(value) else 0
    return 0.5 * 10**-decimals / value


@pytest.mark.parametrize("name", MODELS)
def test_params_match_paper(name):
    entry = nb.get_model_entry(name)
    params = count_params(nb.create_model(name)) / 1e6
    tolerance = PARAM_TOLERANCE.get(name, max(0.01, rounding_tolerance(entry.paper.params_m)))
    assert params == pytest.approx(entry.paper.params_m, rel=tolerance), f"{params:.3f}M"


@pytest.mark.parametrize("name", [n for n in MODELS if nb.get_model_entry(n).paper.madds_m])
def test_mult_adds_match_paper(name):
    entry = nb.get_model_entry(name)
    madds = count_madds(nb.create_model(name), entry.img_size) / 1e6
    assert madds == pytest.approx(entry.paper.madds_m, rel=0.03), f"{madds:.0f}M"


def test_every_nasnet_a_row_is_registered():
    rows = {"nasnet_a_cifar_6_768", "nasnet_a_cifar_7_2304", "nasnet_a_4_1056", "nasnet_a_5_1538",
            "nasnet_a_7_1920", "nasnet_a_6_4032", "pnasnet_5_large", "pnasnet_5_mobile",
            "amoebanet_a_mobile", "darts_v2_cifar"}
    assert rows <= set(MODELS)
    assert nb.get_model_entry("nasnet_a_mobile").name == "nasnet_a_4_1056"
    assert nb.get_model_entry("nasnet_a_large").name == "nasnet_a_6_4032"


def test_entries_record_input_size_and_configs():
    mobile, large = nb.get_model_entry("nasnet_a_mobile"), nb.get_model_entry("nasnet_a_large")
    assert (mobile.img_size, large.img_size) == (224, 331)
    # TF-slim mobile_imagenet_config / large_imagenet_config
    assert (mobile.config.num_filters, mobile.config.stem_multiplier, mobile.config.skip_reduction_layer_input) == (44, 1.0, False)
    assert (large.config.num_filters, large.config.stem_multiplier, large.config.skip_reduction_layer_input) == (168, 3.0, True)
    assert large.config.bn_eps == 1e-3 and nb.get_model_entry("nasnet_a_cifar_6_768").config.bn_eps == 1e-5
    assert large.config.drop_path_prob == pytest.approx(0.3)
    assert nb.get_model_entry("nasnet_a_cifar_6_768").config.drop_path_prob == pytest.approx(0.4)
