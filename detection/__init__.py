"""NASNet backbones for detectron2 (Faster R-CNN on COCO).

Not implemented yet: this package is filled by the detection issue. The multi-scale features it
will wrap exist today: ``nasnet_backbones.create_model(name, features_only=True)``.
"""
