"""Cell search on CIFAR-10 (the paper's controller, random search, regularized evolution).

Not implemented yet: this package is filled by the search issue. Genotypes it will emit are
:class:`nasnet_backbones.Genotype` JSON files, buildable today with ``nasnet_backbones.build_nasnet``.
"""
