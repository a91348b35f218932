"""Classifiers by name, each able to return named intermediate features.

``build_model(name, num_classes, in_channels, image_size, **kwargs)`` builds any entry of
``MODELS`` (mlp, lenet, vgg4, vgg9, resnet20/32/56/110, wrn_D_W, resnet18/34_imagenet); ``extract_features`` returns the
logits and hooked features from one forward pass; ``feature_shapes`` reports per-sample shapes.
"""
from kdlab.models.base import (
    MODELS,
    Classifier,
    GlobalAvgPool2d,
    UnknownFeatureError,
    build_model,
    capture_features,
    extract_features,
    feature_shapes,
)
from kdlab.models.lenet import LeNet
from kdlab.models.mlp import MLP
from kdlab.models.resnet import CifarResNet
from kdlab.models.resnet_bottleneck import BottleneckResNet
from kdlab.models.tv_resnet import ImageNetResNet
from kdlab.models.vgg import VGG
from kdlab.models.wrn import WideResNet

__all__ = [
    "MODELS",
    "build_model",
    "Classifier",
    "extract_features",
    "feature_shapes",
    "capture_features",
    "UnknownFeatureError",
    "GlobalAvgPool2d",
    "MLP",
    "LeNet",
    "VGG",
    "CifarResNet",
    "WideResNet",
    "BottleneckResNet",
    "ImageNetResNet",
]

# GAN generators and discriminators (GAN compression, Aguinaldo et al. 2019): a separate registry.
from kdlab.models.gan import (  # noqa: E402
    DISCRIMINATORS,
    GENERATORS,
    DCDiscriminator,
    DCGenerator,
    build_discriminator,
    build_generator,
    generator_input_kind,
    sample_latent,
)

__all__ += ["GENERATORS", "DISCRIMINATORS", "DCGenerator", "DCDiscriminator", "build_generator",
            "build_discriminator", "generator_input_kind", "sample_latent"]

# MosaicKD players (Fang et al. 2021): Sigmoid generator and patch discriminator, in the same registries.
from kdlab.models.mosaic import MosaicGenerator, PatchDiscriminator, PatchGeometry  # noqa: E402

__all__ += ["MosaicGenerator", "PatchDiscriminator", "PatchGeometry"]

# Image-to-image generators (pix2pix U-Net, CycleGAN ResNet), PatchGAN and SAGAN (VEM paper, sec. 5.1).
from kdlab.models.i2i import (  # noqa: E402
    PRESETS as GENERATOR_PRESETS,
    ImageGeneratorBase,
    PatchGANDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    preset as generator_preset,
)
from kdlab.models.sagan import SAGANDiscriminator, SAGANGenerator, SelfAttention  # noqa: E402
from kdlab.models.unet_deep import UNetDeepGenerator  # noqa: E402  (OMGD's deeper teacher)

__all__ += ["UNetDeepGenerator"]

__all__ += ["GENERATOR_PRESETS", "generator_preset", "ImageGeneratorBase", "UNetGenerator", "ResnetGenerator",
            "PatchGANDiscriminator", "SAGANGenerator", "SAGANDiscriminator", "SelfAttention"]

# torchvision:<name> and timm:<name> (kdlab.models.hub), and plain modules given kdlab's metadata
from kdlab.models import hub  # noqa: E402,F401
from kdlab.models.base import adopt, register_prefix  # noqa: E402

__all__ += ["adopt", "register_prefix"]
