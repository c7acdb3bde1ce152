"""The 1,000 ImageNet-1k class names, in the order of the classifiers' logits."""

import functools


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    from torchvision.models import ResNet50_Weights  # imports torchvision: only when asked

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
