"""The catalogue's entries: every NASNet-A row of the paper's tables, plus PNASNet-5, AmoebaNet-A
and DARTS-V2, each with its pretrained weights next to it.

Each model pairs a genotype with a :class:`NASNetConfig` (TF-slim's ``*_config()`` values where
they exist), its default input size and the figures its paper reports, which the tests check our
parameter and mult-add counts against. Each weights entry names the public file (a port of
Google's TF-slim checkpoints), its sha256 prefix, its layout, eval preprocessing and the accuracy
its publisher measured. Data only: the mechanism is :mod:`.catalogue`; importing
``nasnet_backbones`` registers these.
"""

from __future__ import annotations

from typing import Any

from .catalogue import ModelEntry, PaperFigures, register_model, register_weights
from .genotypes import AMOEBANET_A, DARTS_V2, NASNET_A, PNASNET_5
from .nasnet import NASNetConfig, stack_config
from .weights import Weights

__all__: list[str] = []

_CIFAR = dict(stem="cifar", stem_multiplier=3.0, bn_eps=1e-5, bn_momentum=0.1, aux_head=True)
_IMAGENET = dict(stem="imagenet", bn_eps=1e-3, bn_momentum=0.0003, aux_head=True, dropout=0.5)
_ZOPH = "Zoph et al., 2018, Learning Transferable Architectures for Scalable Image Recognition"

_CADENE = "http://data.lip6.fr/cadene/pretrainedmodels/"
_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_CADENE_README = "Cadene/pretrained-models.pytorch README (eval: resize 1/0.875, centre crop, bilinear)"
_TIMM_RESULTS = "timm results/results-imagenet.csv (eval: crop_pct 0.911, bicubic)"


def _nasnet_a(name: str, n: int, f: int, size: int, paper: PaperFigures, aliases: tuple[str, ...] = (),
              **config: Any) -> None:
    """Register NASNet-A ``N @ F`` under ``name``: ``n`` cells per stack, base width ``f``."""
    cifar = config.get("stem") == "cifar"
    paper_name = name.split("_")[-2:]
    description = (
        f"NASNet-A ({paper_name[0]} @ {paper_name[1]}) {'CIFAR-10' if cifar else 'ImageNet'} {size}x{size}, "
        f"N={n}, base width {f}"
    )
    register_model(
        ModelEntry(
            name=name,
            genotype=NASNET_A,
            config=stack_config(n, f, **config),
            img_size=size,
            num_classes=10 if cifar else 1000,
            paper=paper,
            description=description,
        ),
        aliases,
    )


# CIFAR-10 (paper Table 1). drop_path_keep_prob 0.6, no dense dropout (TF-slim cifar_config).
_nasnet_a("nasnet_a_cifar_6_768", 6, 32, 32, PaperFigures(3.3, None, None, None, _ZOPH + ", Table 1"),
          drop_path_prob=0.4, **_CIFAR)
# As for the 299x299 rows below, 2304 = 24 x 96 gives 32.6M, not the paper's 27.6M; base width 88
# ("7 @ 2112") reproduces it (27.47M).
_nasnet_a("nasnet_a_cifar_7_2304", 7, 88, 32, PaperFigures(27.6, None, None, None, _ZOPH + ", Table 1"),
          drop_path_prob=0.4, **_CIFAR)
# ImageNet (paper Tables 2 and 3).
_nasnet_a("nasnet_a_4_1056", 4, 44, 224, PaperFigures(5.3, 564, 74.0, 91.6, _ZOPH + ", Table 3"),
          aliases=("nasnet_a_mobile",), stem_multiplier=1.0, **_IMAGENET)
register_weights(Weights(
    model="nasnet_a_4_1056", tag="cadene_in1k", url=_CADENE + "nasnetamobile-7e03cead.pth", hash_prefix="7e03cead",
    layout="cadene_nasnet", checkpoint_classes=1000, input_size=224, crop_pct=0.875, interpolation="bilinear",
    published_top1=74.080, published_top5=91.740, metrics_source=_CADENE_README,
    params=5_289_978, mult_adds=563_638_816,
    origin="Cadene pretrainedmodels port of TF-slim NASNet-A_Mobile_224 (TF: 74.0 / 91.6)",
))
# The paper's F column does not fit its own parameter and mult-add counts for the two 299x299
# rows (1538 is not even 24 x an integer). Keeping the paper's N, the base widths that reproduce
# the counts with the large model's stem (multiplier 3) are 60 (10.90M, 2.39B, "5 @ 1440") and
# 76 (22.35M, 4.88B, "7 @ 1824"); no integer width with N = 7 lands within 1% of 22.6M (77 gives
# 22.90M). tests/test_registry.py checks these figures.
_nasnet_a("nasnet_a_5_1538", 5, 60, 299, PaperFigures(10.9, 2350, 78.6, 94.2, _ZOPH + ", Table 2"),
          stem_multiplier=3.0, skip_reduction_layer_input=True, drop_path_prob=0.3, **_IMAGENET)
_nasnet_a("nasnet_a_7_1920", 7, 76, 299, PaperFigures(22.6, 4930, 80.8, 95.3, _ZOPH + ", Table 2"),
          stem_multiplier=3.0, skip_reduction_layer_input=True, drop_path_prob=0.3, **_IMAGENET)
_nasnet_a("nasnet_a_6_4032", 6, 168, 331, PaperFigures(88.9, 23800, 82.7, 96.2, _ZOPH + ", Table 2"),
          aliases=("nasnet_a_large",), stem_multiplier=3.0, skip_reduction_layer_input=True,
          drop_path_prob=0.3, **_IMAGENET)
register_weights(Weights(
    model="nasnet_a_6_4032", tag="tf_in1k", url=_TIMM_RELEASES + "v0.1-weights/nasnetalarge-dc4a7b8b.pth",
    hash_prefix="dc4a7b8b", layout="cadene_nasnet", checkpoint_classes=1000, input_size=331, crop_pct=0.911,
    interpolation="bicubic", published_top1=82.626, published_top5=96.042, metrics_source=_TIMM_RESULTS,
    params=88_753_150, mult_adds=23_783_414_658,
    origin="timm nasnetalarge.tf_in1k (Cadene's port of TF-slim NASNet-A_Large_331, background class dropped; "
           "TF: 82.7 / 96.2)",
))
register_weights(Weights(
    model="nasnet_a_6_4032", tag="cadene_in1k", url=_CADENE + "nasnetalarge-a1897284.pth", hash_prefix="a1897284",
    layout="cadene_nasnet", checkpoint_classes=1001, input_size=331, crop_pct=0.875, interpolation="bilinear",
    published_top1=82.566, published_top5=96.086, metrics_source=_CADENE_README,
    params=88_753_150, mult_adds=23_783_414_658,
    origin="Cadene pretrainedmodels port of TF-slim NASNet-A_Large_331 (1001 classes, background first)",
))

_LIU = "Liu et al., 2018, Progressive Neural Architecture Search, Table 4/5"
register_model(ModelEntry(
    "pnasnet_5_large", PNASNET_5,
    NASNetConfig(num_cells=12, num_filters=216, stem_multiplier=3.0, reductions_in_num_cells=True,
                 drop_path_prob=0.4, **_IMAGENET),
    331, 1000, PaperFigures(86.1, 25000, 82.9, 96.2, _LIU), "PNASNet-5 large (TF-slim large_imagenet_config)",
))
register_weights(Weights(
    model="pnasnet_5_large", tag="tf_in1k", url=_TIMM_RELEASES + "v0.1-cadene/pnasnet5large-bf079911.pth",
    hash_prefix="bf079911", layout="timm_pnasnet", checkpoint_classes=1001, input_size=331, crop_pct=0.911,
    interpolation="bicubic", published_top1=82.782, published_top5=96.040, metrics_source=_TIMM_RESULTS,
    params=86_057_668, mult_adds=24_937_395_792, mirrors=(_CADENE + "pnasnet5large-bf079911.pth",),
    origin="Cadene's port of TF-slim PNASNet-5_Large_331 (1001 classes), as served by timm "
           "(TF: 82.9 / 96.2; Cadene's eval at crop 0.875 bilinear: 82.736 / 95.992)",
))
register_model(ModelEntry(
    "pnasnet_5_mobile", PNASNET_5,
    NASNetConfig(num_cells=9, num_filters=54, stem_multiplier=1.0, reductions_in_num_cells=True, **_IMAGENET),
    224, 1000, PaperFigures(5.1, 588, 74.2, 91.9, _LIU), "PNASNet-5 mobile (TF-slim mobile_imagenet_config)",
))
# AmoebaNet-A (N=4, F=50): tensorflow/tpu amoeba_net macro (32-filter conv stem, no multiplier,
# aux head scaled by 0.4); N and F from the paper's mobile row.
register_model(ModelEntry(
    "amoebanet_a_mobile", AMOEBANET_A,
    stack_config(4, 50, stem_filters=32, aux_channels=(51, 307), **_IMAGENET),
    224, 1000,
    PaperFigures(5.1, 555, 74.5, 92.0, "Real et al., 2019, Regularized Evolution for Image Classifier Architecture Search, Table 2"),
    "AmoebaNet-A (4 @ 50) mobile",
))
# DARTS-V2 on CIFAR-10 with DARTS's NetworkCIFAR macro (C=36, 20 cells, PyTorch padding).
register_model(ModelEntry(
    "darts_v2_cifar", DARTS_V2,
    stack_config(6, 36, stem="cifar", stem_multiplier=3.0, stem_prev="stem", padding="symmetric", bn_eps=1e-5,
                 bn_momentum=0.1, drop_path_prob=0.2, drop_path_scale_by_depth=False, aux_head=True,
                 aux_position="after_second_reduction", head_relu=False),
    32, 10,
    PaperFigures(3.3, None, None, None, "Liu et al., 2019, DARTS: Differentiable Architecture Search, Table 1"),
    "DARTS (second order) CIFAR-10, 20 cells, C=36",
))

