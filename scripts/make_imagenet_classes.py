"""Regenerate ``nasnet_backbones/data/imagenet_classes.tsv`` (a developer tool, not run by users).

The file maps each ImageNet-1k class index to its WordNet id and a readable name. The facts come
from two installed libraries: the sorted list of 1000 wnids and their WordNet lemmas (timm's
``data/_info`` files) and torchvision's short English names, which are in the same index order.
Run it with the test extras installed::

    python scripts/make_imagenet_classes.py
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

from torchvision.models._meta import _IMAGENET_CATEGORIES

OUT = Path(__file__).resolve().parents[1] / "nasnet_backbones" / "data" / "imagenet_classes.tsv"


def main() -> None:
    info = resources.files("timm") / "data" / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    assert len(wnids) == len(_IMAGENET_CATEGORIES) == 1000 and wnids == sorted(wnids)
    with OUT.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "wnid", "name", "lemmas"])
        for index, (wnid, name) in enumerate(zip(wnids, _IMAGENET_CATEGORIES)):
            writer.writerow([index, wnid, name, lemmas[wnid]])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
