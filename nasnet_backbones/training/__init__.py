"""Classification training: the paper's CIFAR-10 and ImageNet recipes, and fine-tuning on any
ImageFolder (``nasnet train``)."""

from .recipes import RECIPES, TrainRecipe, recipe_for
from .trainer import Trainer, TrainState

__all__ = ["RECIPES", "TrainRecipe", "Trainer", "TrainState", "recipe_for"]
