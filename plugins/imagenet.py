"""The 1,000 ImageNet-1k class names, in the order of the classifiers' logits."""

from torchvision.models import ResNet50_Weights

IMAGENET_CLASSES: list[str] = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
