"""NASNet backbones for torchvision's detection models: the backbone (features, optional FPN,
frozen stages and BatchNorm), SSDlite's extractor and detector, and the five whole detectors by
name (``fasterrcnn``, ``maskrcnn``, ``retinanet``, ``fcos``, ``ssdlite``) with their weights.

Needs torchvision only (not detectron2):

>>> from detection.torchvision import torchvision_backbone, torchvision_detector
>>> from torchvision.models.detection import FasterRCNN
>>> model = FasterRCNN(torchvision_backbone("nasnet_a_mobile", pretrained=True), num_classes=91)
>>> retina = torchvision_detector("retinanet", "nasnet_a_mobile", num_classes=91)
"""

from .backbone import NASNetBody, NASNetFPN, torchvision_backbone
from .detectors import DETECTOR_KINDS, load_detector_weights, torchvision_detector
from .ssdlite import SSDLITE_DEFAULTS, NASNetSSDLiteExtractor, ssdlite_nasnet

__all__ = [
    "DETECTOR_KINDS", "NASNetBody", "NASNetFPN", "NASNetSSDLiteExtractor", "SSDLITE_DEFAULTS",
    "load_detector_weights", "ssdlite_nasnet", "torchvision_backbone", "torchvision_detector",
]
